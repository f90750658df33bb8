"""Training VQ-GAN image tokenizers (taming-transformers objective) and the shipped default tokenizer."""
from .config import TrainConfig
from .default_model import DEFAULT_MODEL_DIR, load_default_image_tokenizer

__all__ = ["TrainConfig", "DEFAULT_MODEL_DIR", "load_default_image_tokenizer", "VQGANTrainer"]


def __getattr__(name):  # the trainer pulls in torch.distributed etc.; import it only when asked for
    if name == "VQGANTrainer":
        from .trainer import VQGANTrainer

        return VQGANTrainer
    raise AttributeError(name)
