"""Prediction capture in the SageMaker data-capture format: writer and streaming reader."""
from .reader import CaptureRecord, ReadStats, iter_records, list_files, parse_output, read_all  # noqa: F401
from .schema import (decode_data, dumps_line, format_time, make_record, parse_duration,  # noqa: F401
                     parse_time, validate_record)
from .writer import CaptureWriter  # noqa: F401
