"""The tests run in a temporary data folder: nothing they do lands among a user's own data or artifacts."""

import os
import tempfile
from pathlib import Path

from kb.settings import default_data_dir, get_settings


def test_tests_never_touch_the_users_data_folder():
    settings = get_settings()
    assert settings.data_dir != default_data_dir()
    assert Path(tempfile.gettempdir()).resolve() in settings.data_dir.resolve().parents
    assert settings.artifacts_dir.resolve().is_relative_to(settings.data_dir.resolve())
    assert os.environ["KB_DATA_DIR"] == str(settings.data_dir)  # inherited by every `kb` a test starts
