"""Product search: a lexical index of the catalog and a learned, personalized ranker over its candidates.

text      how queries and item documents become tokens (words and character trigrams)
lexical   the BM25 index (bm25s): build, search top-N, score any item for a query
features  one row of ranking features per (search, candidate item)
ranker    LightGBM LambdaRank over those rows, early-stopped on a later day's searches
quality   NDCG@10, MRR@10 and Recall@50 per search, with conservative ties

`bench/search.py` measures them on generated search sessions (devtools/search_sessions.py).
"""
