#!/usr/bin/env bash
# CUDA compiler launcher: runs one nvcc command and fails it when ptxas reports a serialized
# wgmma ("ptxas info : (C7510..C7515) Potential Performance Loss: wgmma.mma_async instructions
# are serialized ..."). ptxas prints these as info, so --warning-as-error does not catch them,
# and a serialized fp8/bf16 GEMM runs several times slower.
out=$("$@" 2>&1)
rc=$?
[ -n "$out" ] && printf '%s\n' "$out" >&2
if [ $rc -eq 0 ] && grep -q "wgmma.mma_async instructions are serialized" <<<"$out"; then
  echo "ember: ptxas serialized wgmma (see the C751x lines above); treated as a build error" >&2
  exit 1
fi
exit $rc
