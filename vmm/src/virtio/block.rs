//! virtio-blk (placeholder)
