"""One logger for the toolkit, in the format of PaddleDetection's tools."""
import logging
import sys

_FMT = '%(asctime)s - %(levelname)s - %(message)s'


def get_logger(name='detdistill', log_file=None):
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(_FMT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    if log_file and not any(getattr(h, 'baseFilename', None) == log_file
                            for h in logger.handlers):
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(_FMT))
        logger.addHandler(handler)
    return logger
