"""The selection service: active learning: which images, frames, patches or superpixels to annotate."""
