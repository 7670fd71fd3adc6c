"""Reading a pool item's pixels from its URI: the ground floor's reader (``services/common/image_files.py``),
shared with the training wing."""

from services.common.image_files import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, load_image, local_path

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "load_image", "local_path"]
