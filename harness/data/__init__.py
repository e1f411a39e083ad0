"""Data: the built-in synthetic identities, insightface RecordIO and verification packs, image folders.

    from harness.data import RecordIODataset, read_verification_bin, write_verification_bin, write_recordio
    from harness.data import SyntheticConfig, load_or_generate
"""
from .export import export_insightface
from .folders import LabelledFiles, image_folder, list_file
from .preprocess import PREPROCESSING, batch_to_tensor, decode_image, encode_image, random_hflip, to_tensor
from .recordio import RecordIODataset, write_recordio
from .synthetic import SplitDataset, SyntheticConfig, SyntheticFaces, generate, load_or_generate
from .verification import check_verification_bin, file_sha256, read_verification_bin, write_verification_bin

__all__ = ["RecordIODataset", "write_recordio", "read_verification_bin", "write_verification_bin", "file_sha256",
           "image_folder", "list_file", "LabelledFiles", "PREPROCESSING", "to_tensor", "batch_to_tensor",
           "random_hflip", "decode_image", "encode_image", "SyntheticConfig", "SyntheticFaces", "SplitDataset",
           "generate", "load_or_generate", "export_insightface", "check_verification_bin"]
