"""2D dense feature extractors and text encoders, chosen by name in the config.

Robots run offline and hub look-ups stall for tens of seconds before failing, so the package
forces Hugging Face libraries into offline mode before any encoder imports them.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if "huggingface_hub.constants" in sys.modules:
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
