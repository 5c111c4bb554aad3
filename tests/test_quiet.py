"""Known library noise is dropped where it is raised, and only that message: the rest of each logger gets through."""

from __future__ import annotations

import logging
import warnings

from tunebench.util import quiet


class Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_each_known_log_message_is_dropped_and_the_loggers_other_messages_kept():
    quiet.install()
    quiet.install()  # a second call adds nothing
    for name, start in quiet.LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        assert logger.filters.count(quiet._FILTERS[name]) == 1
        kept = Kept()
        logger.addHandler(kept)
        try:
            logger.warning("%s and the rest of it: %s", start, "No module named 'kernels'")
            logger.warning("a message of the same logger that matters")
        finally:
            logger.removeHandler(kept)
        assert kept.messages == ["a message of the same logger that matters"]


def test_each_known_warning_is_ignored_and_others_of_its_category_shown():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        for category, start in quiet.WARNINGS:
            warnings.warn(f"{start} and will be removed", category, stacklevel=1)
            warnings.warn("another deprecation", category, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another deprecation"] * len(quiet.WARNINGS)
