// How a matrix product stores its result `a` (and `b`, the second matrix's, for SwiGLU) at y[i]:
// plainly, added onto the residual stream, or as silu(gate) · up.
fn write_out(i: u32, a: f32, b: f32) {
#if ADD
    y[i] = y[i] + a;
#elif SWIGLU
    y[i] = a / (1.0 + exp(-a)) * b;
#else
    y[i] = a;
#endif
}
