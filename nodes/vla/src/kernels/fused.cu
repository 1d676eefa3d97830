// Fused bf16 kernels for the Llama decoder on CUDA (see src/fused.rs for why each exists).
// Compiled to PTX by build.rs when the `cuda` feature is on; arithmetic in f32, with bf16
// roundings where candle's unfused ops round, so results stay within bf16 noise of them.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

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

// The end of pass 1: the block's partial sums (n_acc rows of D in acc), its max m and sum l,
// into part[h][s].
__device__ __forceinline__ void write_attn_part(float* part, const float* acc, int n_acc, int D, float m, float l) {
    float* dst = part + ((size_t)blockIdx.x * gridDim.y + blockIdx.y) * (D + 2);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float t = 0.f;
        for (int k = 0; k < n_acc; k++) t += acc[k * D + d];
        dst[d] = t;
    }
    if (threadIdx.x == 0) {
        dst[D] = m;
        dst[D + 1] = l;
    }
}

// Attention of one new position over the first n cached ones, split over the positions so
// that 32 heads still fill the card (one block per head left 100 of 132 SMs idle and took
// about 15 us a layer). q: [H, D] (already scaled); caches: [KVH, cap, D]. Pass 1: block
// (h, s) takes positions [s*chunk, min(n, (s+1)*chunk)), chunk <= blockDim = 256, and writes
// part[h][s] = (sum of exp(score - m) * v over its positions [D], m, sum of exp(score - m)).
// A warp reads one cached row at a time, each lane D/32 neighbouring values, so every row is
// one coalesced read (a thread per position, reading its row alone, took 12.8 us a layer at
// 279 positions on an H200, most of it waiting on scattered loads).
// Needs D % 64 == 0 and D <= 256 (checked by the caller).
extern "C" __global__ void vela_decode_attn_part_bf16(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                                                      float* part, int H, int KVH, int D, int cap, int n, int chunk) {
    __shared__ float scores[256];
    __shared__ float red[32];
    __shared__ float acc_w[8 * 256];
    int h = blockIdx.x, s = blockIdx.y, kh = h / (H / KVH), tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5, pairs = D / 64;
    int j0 = s * chunk, len = min(n - j0, chunk);
    float2 qv[4];
    const __nv_bfloat162* qh = (const __nv_bfloat162*)(q + (size_t)h * D) + lane * pairs;
#pragma unroll
    for (int e = 0; e < 4; e++)
        if (e < pairs) qv[e] = __bfloat1622float2(qh[e]);
    const __nv_bfloat162* kb = (const __nv_bfloat162*)(k_cache + ((size_t)kh * cap + j0) * D) + lane * pairs;
    const __nv_bfloat162* vb = (const __nv_bfloat162*)(v_cache + ((size_t)kh * cap + j0) * D) + lane * pairs;
    for (int j = warp; j < len; j += nw) {
        const __nv_bfloat162* kr = kb + (size_t)j * (D / 2);
        float dot = 0.f;
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (e < pairs) {
                float2 f = __bfloat1622float2(kr[e]);
                dot += qv[e].x * f.x + qv[e].y * f.y;
            }
        dot = warp_sum(dot);
        if (lane == 0) scores[j] = dot;
    }
    __syncthreads();
    float score = tid < len ? scores[tid] : -INFINITY;
    float m = block_max(score, red);
    float e = tid < len ? expf(score - m) : 0.f;
    if (tid < len) scores[tid] = e;
    float l = block_sum(e, red);
    float2 a[4];
#pragma unroll
    for (int k = 0; k < 4; k++) a[k] = make_float2(0.f, 0.f);
    for (int j = warp; j < len; j += nw) {
        const __nv_bfloat162* vr = vb + (size_t)j * (D / 2);
        float p = scores[j];
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (k < pairs) {
                float2 f = __bfloat1622float2(vr[k]);
                a[k].x += p * f.x;
                a[k].y += p * f.y;
            }
    }
#pragma unroll
    for (int k = 0; k < 4; k++)
        if (k < pairs) {
            acc_w[warp * D + 2 * (lane * pairs + k)] = a[k].x;
            acc_w[warp * D + 2 * (lane * pairs + k) + 1] = a[k].y;
        }
    __syncthreads();
    write_attn_part(part, acc_w, nw, D, m, l);
}

// The previous pass 1, a thread per position reading its cached row alone (needs D % 8 == 0,
// D <= 256, 256 % (D / 2) == 0); kept for measuring the one above (`VELA_ATTN_ROWS=0`).
extern "C" __global__ void vela_decode_attn_part_thread_bf16(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                                                      float* part, int H, int KVH, int D, int cap, int n, int chunk) {
    __shared__ float scores[256];
    __shared__ float red[32];
    __shared__ float qs[256];
    __shared__ float acc[1024];
    int h = blockIdx.x, s = blockIdx.y, kh = h / (H / KVH), tid = threadIdx.x;
    int j0 = s * chunk, len = min(n - j0, chunk);
    for (int d = tid; d < D; d += blockDim.x) qs[d] = ld(q + (size_t)h * D + d);
    __syncthreads();
    const bf16* kb = k_cache + ((size_t)kh * cap + j0) * D;
    const bf16* vb = v_cache + ((size_t)kh * cap + j0) * D;
    float score = -INFINITY;
    if (tid < len) {
        const uint4* kj = (const uint4*)(kb + (size_t)tid * D);
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
        score = dot;
    }
    float m = block_max(score, red);
    float e = tid < len ? expf(score - m) : 0.f;
    if (tid < 256) scores[tid] = e;
    float l = block_sum(e, red);
    int pairs = D / 2, stripes = blockDim.x / pairs, pd = tid % pairs, stripe = tid / pairs;
    float a0 = 0.f, a1 = 0.f;
    for (int j = stripe; j < len; j += stripes) {
        float2 f = __bfloat1622float2(((const __nv_bfloat162*)(vb + (size_t)j * D))[pd]);
        float p = scores[j];
        a0 += p * f.x;
        a1 += p * f.y;
    }
    acc[stripe * D + 2 * pd] = a0;
    acc[stripe * D + 2 * pd + 1] = a1;
    __syncthreads();
    write_attn_part(part, acc, stripes, D, m, l);
}

// One kernel per decoded position: a CUDA block per head, each warp folding every sixteenth cached
// position into its own running softmax (max, sum and weighted values, as flash decoding
// does), four positions per pass with their key and value rows loaded together, then the
// warps merged through shared memory. The split kernel above spends two launches per layer
// and a block-wide reduction per 64 positions (12.8 us per layer on an H200 at 280
// positions, for 4.6 MB of cache); here each head streams its 2 x n rows once.
// Lane l holds elements [l * D/32, (l+1) * D/32) of q, each key and the output (D % 64 == 0,
// D <= 256). Grid H, blockDim.x <= 512 (a multiple of 32): sixteen warps a head, as a
// block per head leaves most of the card idle and each warp's positions are a latency chain.
extern "C" __global__ void vela_decode_attn_one_bf16(const bf16* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                                                     int H, int KVH, int D, int cap, int n) {
    __shared__ float wm[16], wl[16];
    __shared__ float wacc[16 * 256];
    int h = blockIdx.x, kh = h / (H / KVH), lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int pairs = D / 64;
    float2 qv[4];
    const __nv_bfloat162* qh = (const __nv_bfloat162*)(q + (size_t)h * D) + lane * pairs;
#pragma unroll
    for (int e = 0; e < 4; e++) qv[e] = e < pairs ? __bfloat1622float2(qh[e]) : make_float2(0.f, 0.f);
    const __nv_bfloat162* kb = (const __nv_bfloat162*)(k_cache + (size_t)kh * cap * D) + lane * pairs;
    const __nv_bfloat162* vb = (const __nv_bfloat162*)(v_cache + (size_t)kh * cap * D) + lane * pairs;
    float m = -INFINITY, l = 0.f;
    float2 a[4];
#pragma unroll
    for (int e = 0; e < 4; e++) a[e] = make_float2(0.f, 0.f);
    int j = warp;
    for (; j + 3 * nw < n; j += 4 * nw) {
        float2 kf[4][4], vf[4][4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const __nv_bfloat162* kr = kb + (size_t)(j + u * nw) * (D / 2);
            const __nv_bfloat162* vr = vb + (size_t)(j + u * nw) * (D / 2);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                kf[u][e] = e < pairs ? __bfloat1622float2(kr[e]) : make_float2(0.f, 0.f);
                vf[u][e] = e < pairs ? __bfloat1622float2(vr[e]) : make_float2(0.f, 0.f);
            }
        }
        float dot[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            dot[u] = 0.f;
#pragma unroll
            for (int e = 0; e < 4; e++) dot[u] += qv[e].x * kf[u][e].x + qv[e].y * kf[u][e].y;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
#pragma unroll
            for (int u = 0; u < 4; u++) dot[u] += __shfl_xor_sync(0xffffffff, dot[u], o);
        float mx = fmaxf(fmaxf(m, fmaxf(dot[0], dot[1])), fmaxf(dot[2], dot[3]));
        float scale = __expf(m - mx);
        l *= scale;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            a[e].x *= scale;
            a[e].y *= scale;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            float p = __expf(dot[u] - mx);
            l += p;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                a[e].x += p * vf[u][e].x;
                a[e].y += p * vf[u][e].y;
            }
        }
        m = mx;
    }
    for (; j < n; j += nw) {
        const __nv_bfloat162* kr = kb + (size_t)j * (D / 2);
        const __nv_bfloat162* vr = vb + (size_t)j * (D / 2);
        float dot = 0.f;
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (e < pairs) {
                float2 f = __bfloat1622float2(kr[e]);
                dot += qv[e].x * f.x + qv[e].y * f.y;
            }
        dot = warp_sum(dot);
        float mx = fmaxf(m, dot), scale = __expf(m - mx), p = __expf(dot - mx);
        l = l * scale + p;
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (e < pairs) {
                float2 f = __bfloat1622float2(vr[e]);
                a[e].x = a[e].x * scale + p * f.x;
                a[e].y = a[e].y * scale + p * f.y;
            }
        m = mx;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < 4; e++)
        if (e < pairs) {
            wacc[warp * D + 2 * (lane * pairs + e)] = a[e].x;
            wacc[warp * D + 2 * (lane * pairs + e) + 1] = a[e].y;
        }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nw; w++) M = fmaxf(M, wm[w]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float L = 0.f, o = 0.f;
        for (int w = 0; w < nw; w++) {
            // A warp that saw no position has m = -inf and l = 0: weight 0.
            float c = wl[w] > 0.f ? __expf(wm[w] - M) : 0.f;
            L += wl[w] * c;
            o += wacc[w * D + d] * c;
        }
        out[(size_t)h * D + d] = __float2bfloat16(o / L);
    }
}

// Pass 2: merges the S parts of each head into the attention output [H * D]. Grid H, D threads.
extern "C" __global__ void vela_decode_attn_merge_bf16(const float* part, bf16* out, int S, int D) {
    int h = blockIdx.x, d = threadIdx.x;
    const float* p = part + (size_t)h * S * (D + 2);
    float m = -INFINITY;
    for (int s = 0; s < S; s++) m = fmaxf(m, p[s * (D + 2) + D]);
    float l = 0.f, o = 0.f;
    for (int s = 0; s < S; s++) {
        float w = expf(p[s * (D + 2) + D] - m);
        l += p[s * (D + 2) + D + 1] * w;
        o += p[s * (D + 2) + d] * w;
    }
    if (d < D) out[(size_t)h * D + d] = __float2bfloat16(o / l);
}

// y = W x for one input row: W [N, K] row-major (a Linear weight), x [K], y [N]. Decoding
// reads every weight once per token, so this is a pure streaming kernel: x sits in shared
// memory, each warp streams R rows with 16-byte loads (eight in flight per lane), f32
// accumulation, one bf16 rounding. R is a launch choice (fused.rs): more rows per warp share
// each x load, one row per warp (the default, measured fastest) gives 4096-row layers more
// blocks. Grid: ceil(N / (R * warps
// per block)); dynamic shared memory: K * 2 bytes. Needs K % 8 == 0 and 16-byte aligned rows.
template <int R>
__device__ __forceinline__ void gemv_rows(const bf16* w, const uint4* xs, bf16* y, int N, int K) {
    int kv = K / 8, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row0 = (blockIdx.x * (blockDim.x >> 5) + warp) * R;
    if (row0 >= N) return;
    const uint4* wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = (const uint4*)(w + (size_t)min(row0 + r, N - 1) * K);
    float a[R];
#pragma unroll
    for (int r = 0; r < R; r++) a[r] = 0.f;
#pragma unroll(8 / R)
    for (int c = lane; c < kv; c += 32) {
        uint4 xr = xs[c];
        const __nv_bfloat162* xp = (const __nv_bfloat162*)&xr;
#pragma unroll
        for (int r = 0; r < R; r++) {
            uint4 v = wr[r][c];
            const __nv_bfloat162* p = (const __nv_bfloat162*)&v;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 xf = __bfloat1622float2(xp[e]), f = __bfloat1622float2(p[e]);
                a[r] += xf.x * f.x + xf.y * f.y;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        for (int o = 16; o > 0; o >>= 1) a[r] += __shfl_xor_sync(0xffffffff, a[r], o);
        if (lane == 0 && row0 + r < N) y[row0 + r] = __float2bfloat16(a[r]);
    }
}

__device__ __forceinline__ void load_x(const bf16* x, uint4* xs, int K) {
    const uint4* xv = (const uint4*)x;
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) xs[c] = xv[c];
    __syncthreads();
}

// The down projection of the MLP with silu(gate) * up computed while x is loaded (gu:
// [2K], gate then up; the same roundings as vela_silu_mul_bf16): one kernel instead of two.
// Every block stages all of x before it streams a weight, so this prologue sits on the
// kernel's critical path: 16-byte loads of gate and up (K % 8 == 0, as for the weights), eight
// silus per load. With 2-byte loads it kept the 4096x11008 projection at ~1.7 TB/s.
__device__ __forceinline__ void load_silu_x(const bf16* gu, uint4* xs, int K) {
    const uint4* g4 = (const uint4*)gu;
    const uint4* u4 = (const uint4*)(gu + K);
#pragma unroll 4
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) {
        uint4 gv = g4[c], uv = u4[c], o;
        const __nv_bfloat162* gp = (const __nv_bfloat162*)&gv;
        const __nv_bfloat162* up = (const __nv_bfloat162*)&uv;
        __nv_bfloat162* op = (__nv_bfloat162*)&o;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 g = __bfloat1622float2(gp[e]), u = __bfloat1622float2(up[e]);
            op[e] = __floats2bfloat162_rn(round_bf16(g.x / (1.f + expf(-g.x))) * u.x,
                                          round_bf16(g.y / (1.f + expf(-g.y))) * u.y);
        }
        xs[c] = o;
    }
    __syncthreads();
}

#define GEMV(R)                                                                                   \
    extern "C" __global__ void vela_gemv##R##_bf16(const bf16* w, const bf16* x, bf16* y, int N, int K) { \
        extern __shared__ uint4 xs[];                                                             \
        load_x(x, xs, K);                                                                         \
        gemv_rows<R>(w, xs, y, N, K);                                                             \
    }                                                                                             \
    extern "C" __global__ void vela_gemv_silu##R##_bf16(const bf16* w, const bf16* gu, bf16* y, int N, int K) { \
        extern __shared__ uint4 xs[];                                                             \
        load_silu_x(gu, xs, K);                                                                   \
        gemv_rows<R>(w, xs, y, N, K);                                                             \
    }
GEMV(1)
GEMV(2)
GEMV(4)

// The epilogues of the vision towers' Linear layers. candle runs the matmul, then the bias add,
// then each element-wise op after it as a kernel of its own; at 257 tokens these small kernels,
// about twenty per block of 51, are most of the towers' time. gelu != 0: out = gelu_erf(y + b);
// otherwise out = x + ls * (y + b), with ls null meaning 1, or y + b alone when x is null (a
// Linear's bias: candle's broadcast add is a strided kernel, ~27 us at 257x3072). Same bf16
// roundings as candle's chain.
extern "C" __global__ void vela_bias_epilogue_bf16(const bf16* y, const bf16* b, const bf16* x, const bf16* ls, bf16* out,
                                                  int rows, int n, int gelu) {
    size_t total = (size_t)rows * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        int c = idx % n;
        float v = round_bf16(ld(y + idx) + ld(b + c));
        if (gelu) {
            out[idx] = __float2bfloat16(0.5f * v * (1.f + erff(v * 0.70710678118654752f)));
        } else {
            if (!x) {  // plain bias add (a Linear's output)
                out[idx] = __float2bfloat16(v);
                continue;
            }
            if (ls) v = round_bf16(v * ld(ls + c));
            out[idx] = __float2bfloat16(ld(x + idx) + v);
        }
    }
}

// Catmull-Rom resize of an RGB u8 frame, replaying preprocess::resize_axis weights in the
// image crate's order (rows into f32, then columns, round to the nearest byte). __fmul_rn /
// __fadd_rn keep the compiler from contracting to FMAs, whose single rounding would differ
// from the host's. rows: src [H, W*3] -> tmp [OH, W*3]; cols: tmp [OH, W, 3] -> out [OH, OW, 3].
extern "C" __global__ void vela_resize_rows_u8(const uint8_t* src, float* tmp, const uint32_t* left, const uint32_t* count,
                                               const uint32_t* offset, const float* w, int rowlen, int oh) {
    size_t n = (size_t)oh * rowlen;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int oy = idx / rowlen, x = idx % rowlen;
        uint32_t l = left[oy], c = count[oy], o = offset[oy];
        float t = 0.f;
        for (uint32_t i = 0; i < c; i++) t = __fadd_rn(t, __fmul_rn((float)src[(size_t)(l + i) * rowlen + x], w[o + i]));
        tmp[idx] = t;
    }
}

extern "C" __global__ void vela_resize_cols_u8(const float* tmp, uint8_t* out, const uint32_t* left, const uint32_t* count,
                                               const uint32_t* offset, const float* w, int width, int ow, int oh) {
    size_t n = (size_t)oh * ow * 3;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int y = idx / (ow * 3), r = idx % (ow * 3), ox = r / 3, ch = r % 3;
        uint32_t l = left[ox], c = count[ox], o = offset[ox];
        float t = 0.f;
        for (uint32_t i = 0; i < c; i++) t = __fadd_rn(t, __fmul_rn(tmp[((size_t)y * width + l + i) * 3 + ch], w[o + i]));
        out[idx] = (uint8_t)roundf(fminf(fmaxf(t, 0.f), 255.f));
    }
}

// ---- Q4_K (GGUF k-quant, 4.5 bits per weight) straight from its blocks ----
// A block holds 256 weights of one row in 144 bytes: f16 d, f16 dmin, 12 bytes of packed
// 6-bit scales and mins for eight sub-blocks of 32, then 128 bytes of nibbles. Nibble byte
// 32j + l holds weight 64j + l (low) and 64j + 32 + l (high); weight = d*sc*q - dmin*m.
// The struct is 16-byte aligned (144 = 9 x 16), so a row of whole blocks stays aligned.
struct __align__(16) q4k_block {
    __half2 dm;
    uint8_t scales[12];
    uint8_t qs[128];
};

__device__ __forceinline__ void q4k_scale_min(int j, const uint8_t* s, float& sc, float& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Blocks -> f16 weights for the prefill's cuBLAS GEMM. candle's kernel gives each 256-weight
// block a CUDA block of its own (32 threads) and stores 2 bytes at a time; here a warp takes a
// block, each lane 4 nibble bytes (one 4-byte load) and two 8-byte stores, eight warps to a
// CUDA block. Same arithmetic as candle's (f32 d*sc and dmin*m, then d1*q - m1 rounded to
// f16), and `check-fused` finds the outputs equal. The 7B prefill at Q4_K fell from 28.6 to
// 18.1 ms on an H200.
// T is __half or bf16: the prefill's activations are bf16, and a bf16 expansion spares two casts
// of them per matrix (to f16 and back), about 2 ms of a 7B INT4 prefill on an H200.
__device__ __forceinline__ void to_out(float x, __half* y) { *y = __float2half(x); }
__device__ __forceinline__ void to_out(float x, bf16* y) { *y = __float2bfloat16(x); }

template <typename T>
__device__ __forceinline__ void dequant_q4k(const q4k_block* blocks, T* out, int n_blocks) {
    int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (b >= n_blocks) return;
    const q4k_block& blk = blocks[b];
    int j = lane >> 3, l0 = (lane & 7) * 4;
    float d = __low2float(blk.dm), dmin = __high2float(blk.dm);
    float sc, m;
    q4k_scale_min(2 * j, blk.scales, sc, m);
    float d1 = d * sc, m1 = dmin * m;
    q4k_scale_min(2 * j + 1, blk.scales, sc, m);
    float d2 = d * sc, m2 = dmin * m;
    uint32_t q = *(const uint32_t*)(blk.qs + 32 * j + l0);
    T lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t byte = (q >> (8 * i)) & 0xFF;
        to_out(d1 * (float)(byte & 0xF) - m1, &lo[i]);
        to_out(d2 * (float)(byte >> 4) - m2, &hi[i]);
    }
    T* y = out + (size_t)b * 256 + 64 * j + l0;
    *(uint2*)y = *(const uint2*)lo;
    *(uint2*)(y + 32) = *(const uint2*)hi;
}

extern "C" __global__ void vela_dequant_q4k_f16(const q4k_block* blocks, __half* out, int n_blocks) {
    dequant_q4k(blocks, out, n_blocks);
}

extern "C" __global__ void vela_dequant_q4k_bf16(const q4k_block* blocks, bf16* out, int n_blocks) {
    dequant_q4k(blocks, out, n_blocks);
}

// Softmax of a prompt's attention scores with the causal mask applied on the fly: rows are
// [heads * T] query rows of n >= start + T keys (n may be padded past the last position so
// that the score and value GEMMs see 16-byte aligned rows); query i of a head sees keys
// 0..=start+i, the rest (later positions and padding) get exactly 0. Replaces a broadcast
// add of a [T, n] mask (a strided kernel of its own per layer) and candle's softmax.
extern "C" __global__ void vela_causal_softmax_bf16(const bf16* x, bf16* y, int rows, int n, int T, int start) {
    int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (r >= rows) return;
    int last = start + r % T;
    const bf16* xr = x + (size_t)r * n;
    bf16* yr = y + (size_t)r * n;
    float m = -INFINITY;
    for (int c = lane; c <= last; c += 32) m = fmaxf(m, ld(xr + c));
    m = warp_max(m);
    float s = 0.f;
    for (int c = lane; c <= last; c += 32) s += __expf(ld(xr + c) - m);
    float inv = 1.f / warp_sum(s);
    for (int c = lane; c < n; c += 32) yr[c] = __float2bfloat16(c <= last ? __expf(ld(xr + c) - m) * inv : 0.f);
}

// ---------------------------------------------------------------------------------------------
// Training kernels (src/fused_train.rs). candle's LayerNorm, RMSNorm and softmax have no
// backward pass, so training composed them from ~10 element-wise ops each (~25 more in the
// backward), most of them broadcasts on candle's strided path; with AdamW's ~20 ops per tensor
// they were over half of a training step's kernel time. Arithmetic in f32, bf16 in and out.

// Mean (0 for RMSNorm) and 1/sqrt(variance + eps) of one row, by a warp, in two passes.
__device__ __forceinline__ void row_stats(const bf16* xr, int D, float eps, int centered, float& mean, float& rstd) {
    float s = 0.f;
    if (centered) {
        for (int c = threadIdx.x & 31; c < D; c += 32) s += ld(xr + c);
        s = warp_sum(s);
    }
    mean = centered ? s / D : 0.f;
    float ss = 0.f;
    for (int c = threadIdx.x & 31; c < D; c += 32) {
        float d = ld(xr + c) - mean;
        ss += d * d;
    }
    rstd = rsqrtf(warp_sum(ss) / D + eps);
}

// y = (x - mean) * rstd * w (+ b): LayerNorm (centered = 1) or RMSNorm (0, b null). A warp per
// row of x [rows, D].
extern "C" __global__ void vela_norm_fwd_bf16(const bf16* x, const bf16* w, const bf16* b, bf16* y, int rows, int D,
                                              float eps, int centered) {
    int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (r >= rows) return;
    const bf16* xr = x + (size_t)r * D;
    float mean, rstd;
    row_stats(xr, D, eps, centered, mean, rstd);
    for (int c = threadIdx.x & 31; c < D; c += 32) {
        float o = (ld(xr + c) - mean) * rstd * ld(w + c) + (b ? ld(b + c) : 0.f);
        y[(size_t)r * D + c] = __float2bfloat16(o);
    }
}

// Backward of vela_norm_fwd_bf16: dx for every row, and per CUDA block the partial sums of
// dw = Σ dy·x̂ and db = Σ dy over its rows, written to partial[block][2][D] (summed over blocks
// by the caller, in a fixed order, so the result is deterministic). A block takes
// rows_per_block consecutive rows, its warps one row at a time; D ≤ 32·32, and the shared
// memory holds warps·2·D floats.
#define NORM_MAXK 32
extern "C" __global__ void vela_norm_bwd_bf16(const bf16* x, const bf16* w, const bf16* dy, bf16* dx, float* partial,
                                              int rows, int D, float eps, int centered, int rows_per_block) {
    extern __shared__ float sh[];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float dw[NORM_MAXK], db[NORM_MAXK];
#pragma unroll
    for (int k = 0; k < NORM_MAXK; k++) dw[k] = db[k] = 0.f;
    int r0 = blockIdx.x * rows_per_block, r1 = min(rows, r0 + rows_per_block);
    for (int r = r0 + wid; r < r1; r += nw) {
        const bf16 *xr = x + (size_t)r * D, *gr = dy + (size_t)r * D;
        float mean, rstd;
        row_stats(xr, D, eps, centered, mean, rstd);
        float a = 0.f, s = 0.f;
#pragma unroll
        for (int k = 0; k < NORM_MAXK; k++) {
            int c = lane + 32 * k;
            if (c >= D) break;
            float xh = (ld(xr + c) - mean) * rstd, g = ld(gr + c);
            float gw = g * ld(w + c);
            a += gw * xh;
            s += gw;
            dw[k] += g * xh;
            db[k] += g;
        }
        a = warp_sum(a) / D;
        s = centered ? warp_sum(s) / D : 0.f;
        for (int c = lane; c < D; c += 32) {
            float xh = (ld(xr + c) - mean) * rstd;
            dx[(size_t)r * D + c] = __float2bfloat16(rstd * (ld(gr + c) * ld(w + c) - s - xh * a));
        }
    }
#pragma unroll
    for (int k = 0; k < NORM_MAXK; k++) {
        int c = lane + 32 * k;
        if (c >= D) break;
        sh[(wid * 2) * D + c] = dw[k];
        sh[(wid * 2 + 1) * D + c] = db[k];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 2 * D; i += blockDim.x) {
        float t = 0.f;
        for (int q = 0; q < nw; q++) t += sh[q * 2 * D + i];
        partial[(size_t)blockIdx.x * 2 * D + i] = t;
    }
}

// Softmax over the last axis (n), a warp per row.
extern "C" __global__ void vela_softmax_fwd_bf16(const bf16* x, bf16* y, int rows, int n) {
    int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (r >= rows) return;
    const bf16* xr = x + (size_t)r * n;
    float m = -INFINITY;
    for (int c = lane; c < n; c += 32) m = fmaxf(m, ld(xr + c));
    m = warp_max(m);
    float s = 0.f;
    for (int c = lane; c < n; c += 32) s += __expf(ld(xr + c) - m);
    float inv = 1.f / warp_sum(s);
    for (int c = lane; c < n; c += 32) y[(size_t)r * n + c] = __float2bfloat16(__expf(ld(xr + c) - m) * inv);
}

// dx = y · (dy − Σ dy·y), a warp per row.
extern "C" __global__ void vela_softmax_bwd_bf16(const bf16* y, const bf16* dy, bf16* dx, int rows, int n) {
    int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (r >= rows) return;
    const bf16 *yr = y + (size_t)r * n, *gr = dy + (size_t)r * n;
    float s = 0.f;
    for (int c = lane; c < n; c += 32) s += ld(yr + c) * ld(gr + c);
    s = warp_sum(s);
    for (int c = lane; c < n; c += 32) dx[(size_t)r * n + c] = __float2bfloat16(ld(yr + c) * (ld(gr + c) - s));
}

// Σ g² of one f32 tensor in f64, as per-block partials out[0..gridDim.x) (summed by the
// caller, in order). 256 threads.
extern "C" __global__ void vela_sumsq_f32(const float* g, int n, double* out) {
    __shared__ double sh[8];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        double v = g[i];
        s += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int q = 0; q < (blockDim.x >> 5); q++) t += sh[q];
        out[blockIdx.x] = t;
    }
}

// One AdamW step of one f32 tensor, in place (torch's update: decoupled decay, bias-corrected
// moments; g scaled by the clipping factor first).
extern "C" __global__ void vela_adamw_f32(float* p, float* m, float* v, const float* g, int n, float lr, float b1,
                                          float b2, float c1, float c2, float eps, float wd, float clip) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i] * clip;
        float mi = b1 * m[i] + (1.f - b1) * gi;
        float vi = b2 * v[i] + (1.f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * (1.f - lr * wd) - lr * ((mi / c1) / (sqrtf(vi / c2) + eps));
    }
}

// Rotary embedding of x [BH, T, D] (rotate-half layout) with tables [T, D/2]; sign = -1 applies
// the inverse rotation, which is the backward pass. A thread per (row, pair).
extern "C" __global__ void vela_rope_train_bf16(const bf16* x, const bf16* cos, const bf16* sin, bf16* y, int rows, int T,
                                                int D, float sign) {
    int half = D / 2;
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= (long long)rows * half) return;
    int r = (int)(i / half), p = (int)(i % half), t = r % T;
    float c = ld(cos + (size_t)t * half + p), s = sign * ld(sin + (size_t)t * half + p);
    const bf16* xr = x + (size_t)r * D;
    float x1 = ld(xr + p), x2 = ld(xr + p + half);
    y[(size_t)r * D + p] = __float2bfloat16(x1 * c - x2 * s);
    y[(size_t)r * D + p + half] = __float2bfloat16(x2 * c + x1 * s);
}
