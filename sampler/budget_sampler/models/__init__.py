"""Model runtime: the Llama-family decoder and its Hugging Face checkpoint loader."""
from .llama import SUPPORTED_MODEL_TYPES, ModelConfig, Transformer
from .loader import check_device, load_hf_config, load_model, parse_dtype, resolve_model_path

__all__ = ["SUPPORTED_MODEL_TYPES", "check_device", "ModelConfig", "Transformer", "load_hf_config", "load_model",
           "parse_dtype", "resolve_model_path"]
