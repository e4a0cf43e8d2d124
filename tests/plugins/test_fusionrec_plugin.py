"""The Airflow UI plugin (plugins/fusionrec_plugin.py): MLflow in the navigation bar."""

import importlib.util
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:  # plugins/ is no package: Airflow puts the folder on sys.path
    sys.path.insert(0, str(PLUGINS))


def fresh_plugin_module():
    """plugins/fusionrec_plugin.py imported anew (its menu item's href is read at import time)."""
    spec = importlib.util.spec_from_file_location("fusionrec_plugin_under_test", PLUGINS / "fusionrec_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airflow_loads_the_plugin_from_the_plugins_folder_without_errors():
    from airflow.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
    assert errors == {}
    assert [plugin.name for plugin in plugins] == ["fusionrec"]


def test_the_plugin_registers_the_mlflow_menu_item_in_the_browse_menu(monkeypatch):
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    monkeypatch.setenv("FUSIONREC_MLFLOW_UI", "https://mlflow.example.org")
    [view] = fresh_plugin_module().FusionrecPlugin.external_views
    assert view == {"name": "MLflow runs and models", "href": "https://mlflow.example.org", "destination": "nav",
                    "category": "browse", "url_route": "fusionrec_mlflow"}
    ExternalViewResponse.model_validate(view)  # what the Airflow UI API accepts


def test_the_menu_item_defaults_to_a_local_mlflow_ui(monkeypatch):
    monkeypatch.delenv("FUSIONREC_MLFLOW_UI", raising=False)
    assert fresh_plugin_module().FusionrecPlugin.external_views[0]["href"] == "http://127.0.0.1:5000"


def test_the_plugin_adds_the_mlflow_button_to_operators():
    from fusionrec_operators import MLflowExperimentLink

    links = fresh_plugin_module().FusionrecPlugin.operator_extra_links
    assert len(links) == 1 and isinstance(links[0], MLflowExperimentLink) and links[0].name == "MLflow"
