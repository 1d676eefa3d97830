//! The `--device` flag: CPU everywhere, CUDA when the crate is built with the `cuda` feature
//! (scripts/build-cuda.sh). Every command that takes `--device` goes through [`parse_device`]
//! so the error for a CPU-only build reads the same everywhere.

use candle_core::{DType, Device};

use crate::{Result, VlaError};

/// `cpu`, `cuda` or `cuda:N`. Opens the device: for CUDA a context handle, a stream and a
/// cuBLAS handle. Code that only needs to know that a spec is valid uses [`check_device`].
pub fn parse_device(spec: &str) -> Result<Device> {
    let parsed = parse_spec(spec)?;
    OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match parsed {
        None => Ok(Device::Cpu),
        Some(ordinal) => cuda(ordinal),
    }
}

static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many devices this process has opened through [`parse_device`]: nodes that share one
/// model must open one between them (tested on the CPU, where opening is free).
pub fn opened() -> usize {
    OPENED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Checks a device spec without opening the device: a bad spec, or CUDA asked of a CPU
/// build, gives the same error as [`parse_device`].
///
/// Graph nodes check at start and open the device only where a model is loaded. Each
/// opened CUDA device brings its own stream, cuBLAS handle and kernel modules, and used to be
/// dropped again by every batched client that joined an already loaded model. On the GPU
/// machine, eight of those teardowns at once beside the batching thread's first kernels left
/// every thread spinning in the driver: the start-up hang of `vela bench` (issue 9).
pub fn check_device(spec: &str) -> Result<()> {
    if parse_spec(spec)?.is_some() && !cfg!(feature = "cuda") {
        cuda(0)?;
    }
    Ok(())
}

/// `None` for the CPU, else the CUDA ordinal.
fn parse_spec(spec: &str) -> Result<Option<usize>> {
    let s = spec.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(None);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(n) => n
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| VlaError::Input(format!("bad device `{spec}` (cpu|cuda|cuda:N)")))?,
        None => return Err(VlaError::Input(format!("unknown device `{spec}` (cpu|cuda|cuda:N)"))),
    };
    Ok(Some(ordinal))
}

/// The compute dtype [`default_dtype`] picks for a spec, without opening the device.
pub fn default_dtype_for(spec: &str) -> Result<DType> {
    Ok(dtype_on(parse_spec(spec)?.is_none()))
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    let dev = Device::new_cuda(ordinal)?;
    if let Device::Cuda(d) = &dev {
        // Everything runs on candle's one stream per device, so the cross-stream events candle
        // records for every tensor use buy nothing and cost a driver call per op.
        // SAFETY: no tensor of this device is ever used on another stream.
        unsafe { d.disable_event_tracking() };
        keep_freed_memory(d)?;
    }
    Ok(dev)
}

/// cudarc allocates with `cuMemAllocAsync` from the device's default pool, whose release
/// threshold is 0: every synchronisation (one per decoded token) hands the freed memory back to
/// the driver, and the next op's allocation maps it in again. Keeping it in the pool makes
/// steady-state allocation a pointer bump.
#[cfg(feature = "cuda")]
fn keep_freed_memory(d: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let ctx = d.cuda_stream().context().clone();
    let err = |e: candle_core::cuda_backend::cudarc::driver::DriverError| VlaError::Input(format!("CUDA memory pool: {e}"));
    ctx.bind_to_thread().map_err(err)?;
    let mut threshold = u64::MAX;
    // SAFETY: plain driver calls on the context bound above; `threshold` outlives the call.
    unsafe {
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result().map_err(err)?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut std::ffi::c_void,
        )
        .result()
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    Err(VlaError::Input(
        "this vela was built without CUDA: build it with scripts/build-cuda.sh (cargo feature `cuda`)".into(),
    ))
}

/// Compute dtype for a device when the user does not pick one: f32 on CPU (candle's CPU
/// matmuls are fastest and exact there), bf16 on GPUs (what the checkpoint stores, and what
/// the PyTorch reference runs).
pub fn default_dtype(dev: &Device) -> DType {
    dtype_on(dev.is_cpu())
}

/// The one rule behind both defaults: f32 on the CPU, bf16 on a GPU.
fn dtype_on(cpu: bool) -> DType {
    if cpu { DType::F32 } else { DType::BF16 }
}

/// `f32 | bf16 | f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        other => Err(VlaError::Input(format!("unknown dtype `{other}` (f32|bf16|f16)"))),
    }
}

/// Device memory in use, `(used, total)` bytes, as the driver reports it (all processes).
/// `None` on CPU.
pub fn memory_in_use(dev: &Device) -> Result<Option<(u64, u64)>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        let stream = d.cuda_stream();
        let ctx = stream.context();
        let (free, total) = ctx.mem_get_info().map_err(|e| VlaError::Input(format!("cuMemGetInfo: {e}")))?;
        return Ok(Some(((total - free) as u64, total as u64)));
    }
    let _ = dev;
    Ok(None)
}

/// The card's name (`NVIDIA H100 80GB HBM3`), or a CPU description.
pub fn device_name(dev: &Device) -> String {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        return d.cuda_stream().context().name().unwrap_or_else(|e| format!("cuda (name unavailable: {e})"));
    }
    let _ = dev;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("cpu ({cores} threads)")
}

/// Milliseconds (median of `reps`) of one device-to-device copy of `bytes` through the copy
/// engine (`cuMemcpyDtoDAsync`), between buffers allocated up front. candle's own copy kernels
/// reach about a third of HBM bandwidth on an H100, so they would understate the floor's
/// ceiling. `None` on CPU.
pub fn dtod_copy_ms(dev: &Device, bytes: usize, reps: usize) -> Result<Option<f64>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        let stream = d.cuda_stream();
        let err = |e: candle_core::cuda_backend::cudarc::driver::DriverError| VlaError::Input(format!("copy probe: {e}"));
        // SAFETY: both buffers are written by the copies before anything reads them, and the
        // bytes' values do not matter to a copy.
        let (src, mut dst) = unsafe { (stream.alloc::<u8>(bytes).map_err(err)?, stream.alloc::<u8>(bytes).map_err(err)?) };
        let mut v = Vec::with_capacity(reps);
        for i in 0..=reps {
            stream.synchronize().map_err(err)?;
            let t = std::time::Instant::now();
            stream.memcpy_dtod(&src, &mut dst).map_err(err)?;
            stream.synchronize().map_err(err)?;
            if i > 0 {
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        v.sort_by(|a, b| a.total_cmp(b));
        return Ok(Some(v[v.len() / 2]));
    }
    let _ = (dev, bytes, reps);
    Ok(None)
}
