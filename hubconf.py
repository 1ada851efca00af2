"""torch.hub entry points: one per model configuration that has trained weights registered (chapter 14b), e.g.

    torch.hub.load('path/to/deeplab_nb', 'deeplabv3plus_xception_tiny', source='local', weights='bundled')

Each is `deeplab_nb.model.build_model` for its configuration: `weights=None` builds it untrained, and keyword arguments
go to `build_model`. The entry points are made from the registry, so a newly registered model gets one."""
dependencies = ['torch', 'torchvision', 'numpy', 'PIL', 'scipy', 'fastcore', 'tqdm']  # torch.hub checks these import

from deeplab_nb.model import build_model as _build_model
from deeplab_nb.training import WEIGHTS as _WEIGHTS  # importing deeplab_nb.training registers the shipped weights


def _entry_point(name:str):
    "The hub entry point of the configuration `name`: `build_model(name, weights=..., **kwargs)`."
    def entry_point(weights=None, **kwargs): return _build_model(name, weights=weights, **kwargs)
    known = sorted(w for w, entry in _WEIGHTS.items() if entry.model == name)
    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = (f"DeepLab {name}, untrained or with trained `weights` (one of {known}, or a registered entry); "
                           "kwargs go to deeplab_nb.model.build_model.")
    return entry_point


for _name in sorted({entry.model for entry in _WEIGHTS.values()}): globals()[_name] = _entry_point(_name)
