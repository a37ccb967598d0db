//! Host-side pieces both backends share: generated inputs, rounding to a GEMM's dtype, the
//! thread CPU clock, and a bounded fork-join over threads that meters its threads' CPU time.

use std::time::Instant;

use aitbc_core::jobspec::{generate_f32, Dtype};

use super::RunError;

/// Threads one job may use on the host, at most, whatever the machine has: beyond this the
/// jobs here are memory-bound and more threads only add scheduling noise.
pub const HOST_THREADS_MAX: usize = 64;

/// Elements a generating (or adding) thread takes at least: below this a thread costs more to
/// start than it saves.
pub const HOST_CHUNK_ELEMENTS_MIN: usize = 1 << 16;

/// The host threads a backend uses by default: what the OS offers, within [`HOST_THREADS_MAX`].
pub fn host_threads_default() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, HOST_THREADS_MAX)
}

/// CPU time consumed so far by the calling thread, nanoseconds.
///
/// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: the kernel's per-thread accounting, so time the
/// thread spent preempted or waiting is not counted; the job is billed for the work it did.
#[cfg(unix)]
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    let secs = u64::try_from(ts.tv_sec).expect("thread CPU clock is non-negative");
    let nanos = u64::try_from(ts.tv_nsec).expect("thread CPU clock is non-negative");
    secs * 1_000_000_000 + nanos
}

/// Without a per-thread CPU clock, wall time since the first call stands in (an upper bound
/// on the thread's CPU time).
#[cfg(not(unix))]
pub fn thread_cpu_ns() -> u64 {
    use std::sync::OnceLock;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Fails with [`RunError::Timeout`] once `deadline` has passed: the CPU backend's cooperative
/// cancellation, called between blocks of work.
pub fn check_deadline(deadline: Instant, timeout_ms: u64) -> Result<(), RunError> {
    if Instant::now() >= deadline {
        Err(RunError::Timeout { timeout_ms })
    } else {
        Ok(())
    }
}

/// Runs `work` on each item, each on its own scoped thread when there is more than one item
/// (at most [`HOST_THREADS_MAX`]), and returns the results in item order with the CPU time the
/// spawned threads consumed (0 when the single item ran on the calling thread, whose own clock
/// the caller reads). The first error wins; a panic in a worker thread is re-raised here.
pub fn fork_join<I, R>(items: Vec<I>, work: impl Fn(I) -> Result<R, RunError> + Sync) -> Result<(Vec<R>, u64), RunError>
where
    I: Send,
    R: Send,
{
    assert!(!items.is_empty(), "fork_join needs at least one item");
    assert!(items.len() <= HOST_THREADS_MAX, "fork_join over {} items exceeds HOST_THREADS_MAX", items.len());
    if items.len() == 1 {
        let item = items.into_iter().next().expect("one item");
        return Ok((vec![work(item)?], 0));
    }
    let work = &work;
    let joined: Vec<(Result<R, RunError>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| {
                scope.spawn(move || {
                    let cpu_start = thread_cpu_ns();
                    let result = work(item);
                    (result, thread_cpu_ns() - cpu_start)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let cpu_ns = joined.iter().map(|(_, ns)| ns).sum();
    let results = joined.into_iter().map(|(r, _)| r).collect::<Result<Vec<R>, RunError>>()?;
    Ok((results, cpu_ns))
}

/// Splits `data` into at most `parts` chunks of whole `unit`s (rows, say), as even as they
/// come, each with the index of its first unit.
pub fn split_units<T>(data: &mut [T], unit: usize, parts: usize) -> Vec<(usize, &mut [T])> {
    assert!(unit > 0 && parts > 0);
    assert_eq!(data.len() % unit, 0, "data is not a whole number of units");
    let units = data.len() / unit;
    let parts = parts.min(units).max(1);
    let mut chunks = Vec::with_capacity(parts);
    let mut rest = data;
    let mut first = 0;
    for part in 0..parts {
        // Units of this part: the remainder spread over the first parts, one each.
        let take = units / parts + usize::from(part < units % parts);
        let (chunk, tail) = rest.split_at_mut(take * unit);
        chunks.push((first, chunk));
        first += take;
        rest = tail;
    }
    assert!(rest.is_empty() && first == units);
    chunks
}

/// Threads worth using for `elements` elements: one per [`HOST_CHUNK_ELEMENTS_MIN`], within
/// `threads_max`.
pub fn threads_for(elements: usize, threads_max: usize) -> usize {
    assert!(threads_max >= 1);
    (elements / HOST_CHUNK_ELEMENTS_MIN).clamp(1, threads_max)
}

/// Fills `out` with elements `0..out.len()` of stream `stream` from `seed`
/// ([`generate_f32`]), over up to `threads_max` threads; returns the spawned threads' CPU time.
pub fn generate_into(seed: u64, stream: u64, out: &mut [f32], threads_max: usize, deadline: Instant, timeout_ms: u64) -> Result<u64, RunError> {
    let threads = threads_for(out.len(), threads_max);
    let (_, cpu_ns) = fork_join(split_units(out, 1, threads), |(first, chunk)| {
        check_deadline(deadline, timeout_ms)?;
        for (offset, value) in chunk.iter_mut().enumerate() {
            *value = generate_f32(seed, stream, (first + offset) as u64);
        }
        Ok(())
    })?;
    Ok(cpu_ns)
}

/// Rounds an f32 to the nearest value of `dtype` (round-to-nearest-even, the `half` crate's
/// conversion) and back: what a GEMM of that dtype multiplies.
pub fn round_to(dtype: Dtype, value: f32) -> f32 {
    match dtype {
        Dtype::F32 => value,
        Dtype::F16 => half::f16::from_f32(value).to_f32(),
        Dtype::Bf16 => half::bf16::from_f32(value).to_f32(),
    }
}

/// The 16-bit encodings of `values` in `dtype` (f16 or bf16), for upload to a GPU.
pub fn half_bits(dtype: Dtype, values: &[f32]) -> Vec<u16> {
    match dtype {
        Dtype::F16 => values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect(),
        Dtype::Bf16 => values.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect(),
        Dtype::F32 => panic!("half_bits is for 16-bit dtypes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_split_evenly_and_cover_everything() {
        let mut data: Vec<u32> = (0..30).collect();
        let chunks = split_units(&mut data, 3, 4);
        let sizes: Vec<(usize, usize)> = chunks.iter().map(|(first, c)| (*first, c.len())).collect();
        assert_eq!(sizes, vec![(0, 9), (3, 9), (6, 6), (8, 6)]);
        let mut few = [1u8; 2];
        assert_eq!(split_units(&mut few, 1, 8).len(), 2);
    }

    #[test]
    fn generation_matches_the_contract_whatever_the_thread_count() {
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let n = 3 * HOST_CHUNK_ELEMENTS_MIN + 17;
        let mut one = vec![0.0f32; n];
        let mut many = vec![0.0f32; n];
        generate_into(9, 1, &mut one, 1, deadline, 60_000).unwrap();
        generate_into(9, 1, &mut many, 4, deadline, 60_000).unwrap();
        assert_eq!(one, many);
        assert_eq!(one[n - 1], generate_f32(9, 1, (n - 1) as u64));
    }

    #[test]
    fn thread_cpu_clock_advances_with_work() {
        let start = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > start);
    }

    #[test]
    fn rounding_follows_the_dtype() {
        let v = 0.1f32;
        assert_eq!(round_to(Dtype::F32, v), v);
        assert_ne!(round_to(Dtype::F16, v), v);
        assert_ne!(round_to(Dtype::Bf16, v), round_to(Dtype::F16, v));
        assert_eq!(half_bits(Dtype::Bf16, &[1.0]), vec![0x3f80]);
        assert_eq!(half_bits(Dtype::F16, &[1.0]), vec![0x3c00]);
    }
}
