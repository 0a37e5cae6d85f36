//! virtio-input (placeholder)
