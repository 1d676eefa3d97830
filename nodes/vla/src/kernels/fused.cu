// Fused bf16 kernels for the Llama decoder on CUDA (see src/fused.rs for why each exists).
// Compiled to PTX by build.rs when the `cuda` feature is on; arithmetic in f32, with bf16
// roundings where candle's unfused ops round, so results stay within bf16 noise of them.
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

__device__ float block_sum(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float t = threadIdx.x < warps ? shared[threadIdx.x] : 0.f;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffff, t, o);
    if (threadIdx.x == 0) shared[0] = t;
    __syncthreads();
    return shared[0];
}

__device__ float block_max(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float t = threadIdx.x < warps ? shared[threadIdx.x] : -INFINITY;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffff, t, o));
    if (threadIdx.x == 0) shared[0] = t;
    __syncthreads();
    return shared[0];
}

// Rotary embedding of q and k straight out of the fused qkv projection, k and v written into
// the preallocated cache. qkv: [T, (H + 2 KVH) D]; tables: [max_pos, D/2] (q's carry the
// attention scale); q_out: [H, T, D]; caches: [KVH, cap, D]. Grid (T, H + KVH), D/2 threads.
extern "C" __global__ void vela_rope_kv_bf16(const bf16* qkv, const bf16* cos_q, const bf16* sin_q,
                                             const bf16* cos_k, const bf16* sin_k, bf16* q_out,
                                             bf16* k_cache, bf16* v_cache, int T, int H, int KVH, int D,
                                             int cap, int start) {
    int t = blockIdx.x, head = blockIdx.y, i = threadIdx.x, half = D / 2;
    if (i >= half) return;
    int pos = start + t;
    const bf16* row = qkv + (size_t)t * (H + 2 * KVH) * D;
    size_t tab = (size_t)pos * half + i;
    if (head < H) {
        const bf16* x = row + head * D;
        float x1 = ld(x + i), x2 = ld(x + i + half), c = ld(cos_q + tab), s = ld(sin_q + tab);
        bf16* o = q_out + ((size_t)head * T + t) * D;
        o[i] = __float2bfloat16(x1 * c - x2 * s);
        o[i + half] = __float2bfloat16(x2 * c + x1 * s);
    } else {
        int kh = head - H;
        const bf16* k = row + (H + kh) * D;
        const bf16* v = row + (H + KVH + kh) * D;
        float x1 = ld(k + i), x2 = ld(k + i + half), c = ld(cos_k + tab), s = ld(sin_k + tab);
        size_t dst = ((size_t)kh * cap + pos) * D;
        k_cache[dst + i] = __float2bfloat16(x1 * c - x2 * s);
        k_cache[dst + i + half] = __float2bfloat16(x2 * c + x1 * s);
        v_cache[dst + i] = v[i];
        v_cache[dst + i + half] = v[i + half];
    }
}

// silu(gate) * up from the fused gate/up projection. gu: [rows, 2I]; out: [rows, I].
extern "C" __global__ void vela_silu_mul_bf16(const bf16* gu, bf16* out, int rows, int I) {
    size_t n = (size_t)rows * I;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t r = idx / I, c = idx % I;
        float g = ld(gu + r * 2 * I + c), u = ld(gu + r * 2 * I + I + c);
        float sg = round_bf16(g / (1.f + expf(-g)));
        out[idx] = __float2bfloat16(sg * u);
    }
}

// Residual add then RMSNorm. out: [2, rows, n]: out[0] = x + r, out[1] = rmsnorm(out[0]) * w.
// One block per row.
extern "C" __global__ void vela_add_rmsnorm_bf16(const bf16* x, const bf16* r, const bf16* w, bf16* out,
                                                 int rows, int n, float eps) {
    __shared__ float shared[32];
    int row = blockIdx.x;
    const bf16* xr = x + (size_t)row * n;
    const bf16* rr = r + (size_t)row * n;
    bf16* sum = out + (size_t)row * n;
    bf16* norm = out + (size_t)rows * n + (size_t)row * n;
    float ss = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        bf16 s = __float2bfloat16(ld(xr + c) + ld(rr + c));
        sum[c] = s;
        float f = __bfloat162float(s);
        ss += f * f;
    }
    float total = block_sum(ss, shared);
    float scale = rsqrtf(total / n + eps);
    for (int c = threadIdx.x; c < n; c += blockDim.x)
        norm[c] = __float2bfloat16(ld(sum + c) * scale * ld(w + c));
}

// Attention of one new position over the first n cached ones. q: [H, D] (already scaled);
// caches: [KVH, cap, D]; out: [H * D]. One block of 1024 threads per head: scores one
// position per thread (16-byte loads along the row), then each group of D/2 threads sums a
// stripe of positions for every pair of dimensions. Dynamic shared memory holds n scores.
// Needs D % 8 == 0, D <= 256 and 1024 % (D / 2) == 0 (checked by the caller).
extern "C" __global__ void vela_decode_attn_bf16(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                                                 bf16* out, int H, int KVH, int D, int cap, int n) {
    extern __shared__ float scores[];
    __shared__ float red[32];
    __shared__ float qs[256];
    __shared__ float acc[2048];
    int h = blockIdx.x, kh = h / (H / KVH), tid = threadIdx.x;
    for (int d = tid; d < D; d += blockDim.x) qs[d] = ld(q + (size_t)h * D + d);
    __syncthreads();
    const bf16* kb = k_cache + (size_t)kh * cap * D;
    const bf16* vb = v_cache + (size_t)kh * cap * D;
    for (int j = tid; j < n; j += blockDim.x) {
        const uint4* kj = (const uint4*)(kb + (size_t)j * D);
        float dot = 0.f;
#pragma unroll 4
        for (int c = 0; c < D / 8; c++) {
            uint4 raw = kj[c];
            const __nv_bfloat162* p = (const __nv_bfloat162*)&raw;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 f = __bfloat1622float2(p[e]);
                dot += qs[c * 8 + 2 * e] * f.x + qs[c * 8 + 2 * e + 1] * f.y;
            }
        }
        scores[j] = dot;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = tid; j < n; j += blockDim.x) m = fmaxf(m, scores[j]);
    m = block_max(m, red);
    float s = 0.f;
    for (int j = tid; j < n; j += blockDim.x) {
        float e = expf(scores[j] - m);
        scores[j] = e;
        s += e;
    }
    s = block_sum(s, red);
    int pairs = D / 2, stripes = blockDim.x / pairs, pd = tid % pairs, stripe = tid / pairs;
    float a0 = 0.f, a1 = 0.f;
    if (stripe < stripes) {
#pragma unroll 4
        for (int j = stripe; j < n; j += stripes) {
            float2 f = __bfloat1622float2(((const __nv_bfloat162*)(vb + (size_t)j * D))[pd]);
            float p = scores[j];
            a0 += p * f.x;
            a1 += p * f.y;
        }
        acc[stripe * D + 2 * pd] = a0;
        acc[stripe * D + 2 * pd + 1] = a1;
    }
    __syncthreads();
    for (int d = tid; d < D; d += blockDim.x) {
        float t = 0.f;
        for (int k = 0; k < stripes; k++) t += acc[k * D + d];
        out[(size_t)h * D + d] = __float2bfloat16(t / s);
    }
}

// y = W x for one input row: W [N, K] row-major (a Linear weight), x [K], y [N]. Decoding
// reads every weight once per token, so this is a pure streaming kernel: x sits in shared
// memory, each warp streams one row with 16-byte loads (eight in flight), f32 accumulation,
// one bf16 rounding. One row per warp keeps 4096-row layers at 512 blocks: with two rows per
// warp they ran at two thirds of the bandwidth of the wide ones. Grid: ceil(N / warps per
// block); dynamic shared memory: K * 2 bytes. Needs K % 8 == 0 and 16-byte aligned rows.
__device__ __forceinline__ void gemv_rows(const bf16* w, const uint4* xs, bf16* y, int N, int K) {
    int kv = K / 8, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= N) return;
    const uint4* wr = (const uint4*)(w + (size_t)row * K);
    float a = 0.f;
#pragma unroll 8
    for (int c = lane; c < kv; c += 32) {
        uint4 xr = xs[c], r = wr[c];
        const __nv_bfloat162* xp = (const __nv_bfloat162*)&xr;
        const __nv_bfloat162* p = (const __nv_bfloat162*)&r;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 xf = __bfloat1622float2(xp[e]), f = __bfloat1622float2(p[e]);
            a += xf.x * f.x + xf.y * f.y;
        }
    }
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
    if (lane == 0) y[row] = __float2bfloat16(a);
}

extern "C" __global__ void vela_gemv_bf16(const bf16* w, const bf16* x, bf16* y, int N, int K) {
    extern __shared__ uint4 xs[];
    const uint4* xv = (const uint4*)x;
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) xs[c] = xv[c];
    __syncthreads();
    gemv_rows(w, xs, y, N, K);
}

// The down projection of the MLP with silu(gate) * up computed while x is loaded (gu:
// [2K], gate then up; the same roundings as vela_silu_mul_bf16): one kernel instead of two.
extern "C" __global__ void vela_gemv_silu_bf16(const bf16* w, const bf16* gu, bf16* y, int N, int K) {
    extern __shared__ uint4 xs[];
    bf16* xb = (bf16*)xs;
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        float g = ld(gu + i), u = ld(gu + K + i);
        xb[i] = __float2bfloat16(round_bf16(g / (1.f + expf(-g))) * u);
    }
    __syncthreads();
    gemv_rows(w, xs, y, N, K);
}
