"""Plain-PyTorch references of the ops, written from their definitions: what the tests hold the
kernels to, what the selftest compares them with on the user's device, and the path a disabled
kernel's calls take (ember.ops.reference_path). ember.float8.reference is the float8 family's."""
