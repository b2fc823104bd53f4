// Fused cross-attention: out = softmax(scale * Q K^T + mask) V, one pass, tuned for
// the two cross-attentions of avss_sdk (few keys and many queries in VTA, few queries
// and many keys in the mask decoder).
//
// Layout: Q, out [B, H, Lq, D]; K, V [B, H, Lk, D], contiguous. T is __half or float;
// every product and sum is FP32. Masks: an optional additive mask of type T, addressed
// with element strides (0 on a broadcast dimension), and an optional key-padding mask
// [B, Lk] of bytes (nonzero = masked out). A row whose keys are all masked (-inf) gets
// zeros, never NaN.
//
// A block is 4 warps; warp w owns RPW consecutive query rows of the block's tile of
// BQ = 4 * RPW rows, and all 32 lanes of a warp work on one row at a time.
//  * short path: all of K and V for one (b, h) fit in this block's shared memory. They
//    are loaded once; each lane scores keys lane, lane + 32, ... into registers, and the
//    softmax is exact (max, then exp and sum) with no rescaling.
//  * long path: 32-key tiles of K and V; each lane scores one key of the tile and the
//    warp keeps an online softmax (running max m, sum l, FP32 accumulators).
//    When Lq is small the launcher also splits the keys over gridDim.z: every split
//    writes (m, l, acc) for its rows to a FP32 workspace and the last split block to
//    arrive for a tile (atomic counter, then it resets the counter to 0) merges them,
//    so the reduction is in the same launch.
// K rows in shared memory are padded by one 32-bit word, so lane j reading word w of
// key j hits bank (j * (words + 1) + w) % 32: no conflicts. V rows are read along D by
// consecutive lanes: no padding needed.

#include <cuda_fp16.h>
#include <stdint.h>

namespace fca {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileK = 32;
constexpr int kSmemBytes = 48 * 1024;  // static limit without opt-in, any arch

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Compile-time geometry for one (T, D).
template <typename T, int D>
struct Geo {
  static_assert(D == 32 || D == 64 || D == 128, "head dim must be 32, 64 or 128");
  static constexpr int kRowsPerWarp = D == 128 ? 4 : 8;
  static constexpr int kBQ = kWarps * kRowsPerWarp;
  static constexpr int kWordsPerRow = D * (int)sizeof(T) / 4;  // 32-bit words in a K/V row
  static constexpr int kKStride = kWordsPerRow + 1;            // padded K row, in words
  static constexpr int kDimsPerLane = D / 32;
  static constexpr int kQBytes = kBQ * D * 4;                  // scaled Q tile, FP32
  static constexpr int kKeyBytes = kKStride * 4 + D * (int)sizeof(T);
  // Keys the short path holds at once, rounded down to whole 32-key chunks.
  static constexpr int kShortCap = ((kSmemBytes - kQBytes) / kKeyBytes) / 32 * 32;
  static constexpr int kShortChunks = kShortCap / 32;
  static constexpr int kLongBytes = kQBytes + kTileK * kKeyBytes;
};

struct Args {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  const void* mask;          // additive, type T, or nullptr
  long long msb, msh, msq, msk;  // its element strides (0 = broadcast)
  const unsigned char* kpm;  // [B, Lk] key padding, or nullptr
  int B, H, Lq, Lk;
  float scale;
};

// Scaled Q rows of this block's tile into shared memory as FP32 (zeros past Lq).
template <typename T, int D>
__device__ __forceinline__ void load_q(const Args& a, float* qs, int bh, int q0) {
  using G = Geo<T, D>;
  const T* q = static_cast<const T*>(a.q) + ((long long)bh * a.Lq) * D;
  for (int i = threadIdx.x; i < G::kBQ * D; i += kThreads) {
    int r = q0 + i / D;
    qs[i] = r < a.Lq ? to_f(q[(long long)r * D + (i % D)]) * a.scale : 0.f;
  }
}

// Keys [k0, k0 + n) into padded K rows and plain V rows; rows in [n, nrows) are zero.
template <typename T, int D>
__device__ __forceinline__ void load_kv(const Args& a, uint32_t* ks, T* vs, int bh, int k0,
                                        int n, int nrows) {
  using G = Geo<T, D>;
  const uint32_t* k = reinterpret_cast<const uint32_t*>(static_cast<const T*>(a.k) +
                                                        ((long long)bh * a.Lk + k0) * D);
  const uint32_t* v = reinterpret_cast<const uint32_t*>(static_cast<const T*>(a.v) +
                                                        ((long long)bh * a.Lk + k0) * D);
  uint32_t* vw = reinterpret_cast<uint32_t*>(vs);
  for (int i = threadIdx.x; i < nrows * G::kWordsPerRow; i += kThreads) {
    int j = i / G::kWordsPerRow, w = i % G::kWordsPerRow;
    bool in = j < n;
    ks[j * G::kKStride + w] = in ? k[i] : 0u;
    vw[i] = in ? v[i] : 0u;
  }
}

// Dot product of a scaled FP32 Q row (broadcast reads) with one padded K row.
template <typename T, int D>
__device__ __forceinline__ float dot_qk(const float* qrow, const uint32_t* krow) {
  using G = Geo<T, D>;
  float s = 0.f;
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int w = 0; w < G::kWordsPerRow; ++w) {
      float2 kf = __half22float2(*reinterpret_cast<const __half2*>(&krow[w]));
      s = fmaf(qrow[2 * w], kf.x, s);
      s = fmaf(qrow[2 * w + 1], kf.y, s);
    }
  } else {
#pragma unroll
    for (int w = 0; w < G::kWordsPerRow; ++w) s = fmaf(qrow[w], __uint_as_float(krow[w]), s);
  }
  return s;
}

// Score of (row r, key j) after masking; -inf when masked out or past Lk.
template <typename T, int D>
__device__ __forceinline__ float score(const Args& a, const float* qrow, const uint32_t* krow,
                                       int b, int h, int r, int j) {
  if (j >= a.Lk) return -INFINITY;
  float s = dot_qk<T, D>(qrow, krow);
  if (a.mask != nullptr)
    s += to_f(static_cast<const T*>(a.mask)[b * a.msb + h * a.msh + r * a.msq + j * a.msk]);
  if (a.kpm != nullptr && a.kpm[(long long)b * a.Lk + j]) s = -INFINITY;
  return s;
}

template <typename T, int D>
__device__ __forceinline__ void store_row(const Args& a, int bh, int r, const float* acc,
                                          float inv_l) {
  using G = Geo<T, D>;
  T* o = static_cast<T*>(a.out) + ((long long)bh * a.Lq + r) * D;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int c = 0; c < G::kDimsPerLane; ++c) o[lane + 32 * c] = from_f<T>(acc[c] * inv_l);
}

// Short path: grid (ceil(Lq / BQ), B * H); requires Lk <= Geo::kShortCap.
template <typename T, int D>
__device__ void short_body(const Args& a, unsigned char* smem) {
  using G = Geo<T, D>;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int q0 = blockIdx.x * G::kBQ;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* qs = reinterpret_cast<float*>(smem);
  uint32_t* ks = reinterpret_cast<uint32_t*>(smem + G::kQBytes);
  T* vs = reinterpret_cast<T*>(smem + G::kQBytes + G::kShortCap * G::kKStride * 4);
  load_q<T, D>(a, qs, bh, q0);
  load_kv<T, D>(a, ks, vs, bh, 0, a.Lk, a.Lk);
  __syncthreads();
  const int nchunks = (a.Lk + 31) / 32;
  for (int i = 0; i < G::kRowsPerWarp; ++i) {
    const int rl = warp * G::kRowsPerWarp + i, r = q0 + rl;
    if (r >= a.Lq) break;  // warp-uniform
    const float* qrow = qs + rl * D;
    float s[G::kShortChunks];
    float m = -INFINITY;
#pragma unroll
    for (int c = 0; c < G::kShortChunks; ++c) {
      if (c < nchunks) {
        const int j = c * 32 + lane;
        s[c] = score<T, D>(a, qrow, ks + j * G::kKStride, b, h, r, j);
        m = fmaxf(m, s[c]);
      }
    }
    m = warp_max(m);
    float acc[G::kDimsPerLane];
#pragma unroll
    for (int c = 0; c < G::kDimsPerLane; ++c) acc[c] = 0.f;
    if (m == -INFINITY) {  // every key masked out
      store_row<T, D>(a, bh, r, acc, 0.f);
      continue;
    }
    float l = 0.f;
#pragma unroll
    for (int c = 0; c < G::kShortChunks; ++c) {
      if (c < nchunks) {
        s[c] = __expf(s[c] - m);
        l += s[c];
        const int nj = min(32, a.Lk - c * 32);
        for (int j = 0; j < nj; ++j) {
          const float p = __shfl_sync(0xffffffffu, s[c], j);
          const T* vrow = vs + (c * 32 + j) * D;
#pragma unroll
          for (int e = 0; e < G::kDimsPerLane; ++e)
            acc[e] = fmaf(p, to_f(vrow[lane + 32 * e]), acc[e]);
        }
      }
    }
    l = warp_sum(l);
    store_row<T, D>(a, bh, r, acc, 1.f / l);
  }
}

// Long path: grid (ceil(Lq / BQ), B * H, splits). Split z takes key tiles
// [z * tiles_per_split, (z + 1) * tiles_per_split). With splits > 1, ws holds
// splits * B*H*Lq * (D + 2) floats and counters ceil(Lq / BQ) * B*H zeroed ints.
template <typename T, int D>
__device__ void long_body(const Args& a, unsigned char* smem, int splits, int tiles_per_split,
                          float* ws, int* counters) {
  using G = Geo<T, D>;
  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int q0 = blockIdx.x * G::kBQ;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* qs = reinterpret_cast<float*>(smem);
  uint32_t* ks = reinterpret_cast<uint32_t*>(smem + G::kQBytes);
  T* vs = reinterpret_cast<T*>(smem + G::kQBytes + kTileK * G::kKStride * 4);
  load_q<T, D>(a, qs, bh, q0);

  float m[G::kRowsPerWarp], l[G::kRowsPerWarp], acc[G::kRowsPerWarp][G::kDimsPerLane];
#pragma unroll
  for (int i = 0; i < G::kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < G::kDimsPerLane; ++c) acc[i][c] = 0.f;
  }
  const int ntiles = (a.Lk + kTileK - 1) / kTileK;
  const int t0 = blockIdx.z * tiles_per_split, t1 = min(ntiles, t0 + tiles_per_split);
  for (int t = t0; t < t1; ++t) {
    const int k0 = t * kTileK;
    __syncthreads();  // previous tile fully consumed (and Q tile written, first time)
    load_kv<T, D>(a, ks, vs, bh, k0, min(kTileK, a.Lk - k0), kTileK);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < G::kRowsPerWarp; ++i) {
      const int rl = warp * G::kRowsPerWarp + i, r = q0 + rl;
      if (r < a.Lq) {  // warp-uniform
        const float s = score<T, D>(a, qs + rl * D, ks + lane * G::kKStride, b, h, r, k0 + lane);
        const float m_new = fmaxf(m[i], warp_max(s));
        const float m_ref = m_new == -INFINITY ? 0.f : m_new;  // keeps exp(-inf - ref) = 0
        const float p = __expf(s - m_ref);
        const float alpha = __expf(m[i] - m_ref);
        l[i] = l[i] * alpha + warp_sum(p);
        m[i] = m_new;
#pragma unroll
        for (int c = 0; c < G::kDimsPerLane; ++c) acc[i][c] *= alpha;
#pragma unroll 8
        for (int j = 0; j < kTileK; ++j) {
          const float pj = __shfl_sync(0xffffffffu, p, j);
          const T* vrow = vs + j * D;
#pragma unroll
          for (int c = 0; c < G::kDimsPerLane; ++c)
            acc[i][c] = fmaf(pj, to_f(vrow[lane + 32 * c]), acc[i][c]);
        }
      }
    }
  }

  if (splits == 1) {
#pragma unroll
    for (int i = 0; i < G::kRowsPerWarp; ++i) {
      const int r = q0 + warp * G::kRowsPerWarp + i;
      if (r < a.Lq) store_row<T, D>(a, bh, r, acc[i], l[i] > 0.f ? 1.f / l[i] : 0.f);
    }
    return;
  }

  // Split-K: publish this split's partial state, then the last block of the tile merges.
  const long long rows = (long long)a.B * a.H * a.Lq;
  float* ws_acc = ws;                             // [splits, rows, D]
  float* ws_ml = ws + (long long)splits * rows * D;  // [splits, rows, 2]
#pragma unroll
  for (int i = 0; i < G::kRowsPerWarp; ++i) {
    const int r = q0 + warp * G::kRowsPerWarp + i;
    if (r < a.Lq) {
      const long long row = (long long)bh * a.Lq + r;
      float* pa = ws_acc + ((long long)blockIdx.z * rows + row) * D;
#pragma unroll
      for (int c = 0; c < G::kDimsPerLane; ++c) pa[lane + 32 * c] = acc[i][c];
      if (lane == 0) {
        ws_ml[((long long)blockIdx.z * rows + row) * 2] = m[i];
        ws_ml[((long long)blockIdx.z * rows + row) * 2 + 1] = l[i];
      }
    }
  }
  __threadfence();
  __syncthreads();
  __shared__ int is_last;
  const int tile_id = bh * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) is_last = atomicAdd(&counters[tile_id], 1) == splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int i = 0; i < G::kRowsPerWarp; ++i) {
    const int r = q0 + warp * G::kRowsPerWarp + i;
    if (r >= a.Lq) break;
    const long long row = (long long)bh * a.Lq + r;
    float mx = -INFINITY;
    for (int z = 0; z < splits; ++z) mx = fmaxf(mx, __ldcg(&ws_ml[((long long)z * rows + row) * 2]));
    float o[G::kDimsPerLane];
#pragma unroll
    for (int c = 0; c < G::kDimsPerLane; ++c) o[c] = 0.f;
    float lsum = 0.f;
    if (mx != -INFINITY) {
      for (int z = 0; z < splits; ++z) {
        const float f = __expf(__ldcg(&ws_ml[((long long)z * rows + row) * 2]) - mx);
        lsum += f * __ldcg(&ws_ml[((long long)z * rows + row) * 2 + 1]);
        const float* pa = ws_acc + ((long long)z * rows + row) * D;
#pragma unroll
        for (int c = 0; c < G::kDimsPerLane; ++c) o[c] = fmaf(f, __ldcg(&pa[lane + 32 * c]), o[c]);
      }
    }
    store_row<T, D>(a, bh, r, o, lsum > 0.f ? 1.f / lsum : 0.f);
  }
  if (threadIdx.x == 0) counters[tile_id] = 0;  // ready for the next launch
}

}  // namespace fca

// ---- Entry points for the cuda-python launcher -------------------------------------
// fca_short_<t>_d<D> / fca_long_<t>_d<D>, t in {f16, f32}: Q, K, V, out, additive mask
// (or null) and its 4 strides, key-padding mask (or null), B, H, Lq, Lk, scale; the long
// kernel adds splits, tiles_per_split, workspace and counters.
#define FCA_LAUNCHER_ENTRIES(TN, T, D)                                                       \
  extern "C" __global__ void __launch_bounds__(fca::kThreads)                                \
      fca_short_##TN##_d##D(const T* q, const T* k, const T* v, T* out, const T* mask,       \
                            long long msb, long long msh, long long msq, long long msk,      \
                            const unsigned char* kpm, int B, int H, int Lq, int Lk,          \
                            float scale) {                                                   \
    __shared__ __align__(16) unsigned char smem[fca::kSmemBytes];                           \
    fca::Args a{q, k, v, out, mask, msb, msh, msq, msk, kpm, B, H, Lq, Lk, scale};           \
    fca::short_body<T, D>(a, smem);                                                          \
  }                                                                                          \
  extern "C" __global__ void __launch_bounds__(fca::kThreads)                                \
      fca_long_##TN##_d##D(const T* q, const T* k, const T* v, T* out, const T* mask,        \
                           long long msb, long long msh, long long msq, long long msk,       \
                           const unsigned char* kpm, int B, int H, int Lq, int Lk,           \
                           float scale, int splits, int tiles_per_split, float* ws,          \
                           int* counters) {                                                  \
    __shared__ __align__(16) unsigned char smem[fca::Geo<T, D>::kLongBytes];                \
    fca::Args a{q, k, v, out, mask, msb, msh, msq, msk, kpm, B, H, Lq, Lk, scale};           \
    fca::long_body<T, D>(a, smem, splits, tiles_per_split, ws, counters);                    \
  }

// ---- Entry points for the TensorRT AOT plugin --------------------------------------
// TensorRT passes the input tensors, then the extra int32 scalars, then the outputs.
// Grid (ceil(Lq / BQ), B * H), 128 threads, static shared memory only. The path is
// chosen here from Lk, which can be a dynamic dimension of the engine; there is no
// workspace in an AOT plugin, so the long path runs unsplit. scale arrives as the bits
// of a float32.
#define FCA_TRT_ENTRY(TN, T, D)                                                              \
  extern "C" __global__ void __launch_bounds__(fca::kThreads)                                \
      fca_trt_##TN##_d##D(const T* q, const T* k, const T* v, const T* mask, int B, int H,   \
                          int Lq, int Lk, int mB, int mH, int mQ, int mK, int has_mask,      \
                          int scale_bits, T* out) {                                          \
    __shared__ __align__(16) unsigned char smem[fca::kSmemBytes];                           \
    const long long msk = mK == 1 ? 0 : 1, msq = mQ == 1 ? 0 : (long long)mK;               \
    const long long msh = mH == 1 ? 0 : (long long)mQ * mK;                                 \
    const long long msb = mB == 1 ? 0 : (long long)mH * mQ * mK;                            \
    fca::Args a{q,   k,   v,   out,     has_mask ? mask : nullptr, msb, msh, msq, msk,       \
                nullptr, B, H, Lq, Lk, __int_as_float(scale_bits)};                          \
    if (Lk <= fca::Geo<T, D>::kShortCap)                                                     \
      fca::short_body<T, D>(a, smem);                                                        \
    else                                                                                     \
      fca::long_body<T, D>(a, smem, 1, (Lk + fca::kTileK - 1) / fca::kTileK, nullptr,       \
                           nullptr);                                                         \
  }

#define FCA_ALL(TN, T, D) FCA_LAUNCHER_ENTRIES(TN, T, D) FCA_TRT_ENTRY(TN, T, D)

FCA_ALL(f16, __half, 32)
FCA_ALL(f16, __half, 64)
FCA_ALL(f16, __half, 128)
FCA_ALL(f32, float, 32)
FCA_ALL(f32, float, 64)
FCA_ALL(f32, float, 128)
