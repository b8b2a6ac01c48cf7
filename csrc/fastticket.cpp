// fastticket._C: the op schemas (torch.library) and the Python module shell. Kernels register their
// implementations per dispatch key in csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA, when built with CUDA);
// fake (meta) implementations for torch.compile live in fastticket/ops/cpp_backend.py.
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(fastticket, m) {
  // out = head_scale * softmax(scale q k^T + padding/window mask) v; ctx (unscaled) is returned only when saved
  // for backward and head_scale is given (else out is ctx, or it is not needed): shape [0] otherwise; lse
  // [B,H,T]. window: real query t attends keys |t - s| <= window (None: all).
  m.def("attn_fwd(Tensor q, Tensor k, Tensor v, Tensor? head_scale, Tensor? lengths, float softmax_scale, "
        "bool save_for_backward, int? window=None) -> (Tensor out, Tensor ctx, Tensor lse)");
  // r_sum[b,h] = sum_t <dout_t, ctx_t> (the head-mask gradient), r_abs = sum_t |...| (the probe).
  m.def("attn_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor ctx, Tensor lse, Tensor? head_scale, "
        "Tensor? lengths, float softmax_scale, bool need_qkv, int? window=None) -> (Tensor dq, Tensor dk, Tensor dv, "
        "Tensor r_sum, Tensor r_abs)");
  m.def("rln_fwd(Tensor x, Tensor residual, Tensor? scale, Tensor weight, Tensor bias, float eps) "
        "-> (Tensor y, Tensor mean, Tensor rstd)");
  m.def("rln_bwd(Tensor dy, Tensor x, Tensor residual, Tensor? scale, Tensor weight, Tensor mean, Tensor rstd) "
        "-> (Tensor dx, Tensor dresidual, Tensor dweight, Tensor dbias, Tensor r_sum, Tensor r_abs)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastticket compiled ops (registered as torch.ops.fastticket.*)";
#ifdef FASTTICKET_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
