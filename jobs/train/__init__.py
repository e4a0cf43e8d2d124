"""The training stages (train_baselines, train_user_encoder, train_item_encoder), the models
they fit and the scorers that rank the catalog with them."""
