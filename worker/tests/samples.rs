//! Every sample job spec parses, validates and runs: CPU-capable ones on the CPU backend here,
//! all of them on CUDA where a GPU exists.

mod common;

use std::path::PathBuf;

use aitbc_core::jobspec::{checksum_f32, generate_f32, JobKind, JobSpec, MatrixInput};
use aitbc_worker::{Backend, CpuBackend, RunError, RunLimits};

/// The samples README.md documents, by file name.
const SAMPLES: [&str; 6] = ["vector_add.json", "reduction.json", "gemm.json", "gemm_inline.json", "kernel_saxpy.json", "text_generation.json"];

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/jobs")
}

fn load_all() -> Vec<(String, JobSpec)> {
    let mut names: Vec<String> = std::fs::read_dir(samples_dir())
        .expect("samples/jobs exists")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    let mut want: Vec<String> = SAMPLES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "samples/jobs holds exactly the documented samples");
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(samples_dir().join(&name)).unwrap();
            let spec: JobSpec = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, spec)
        })
        .collect()
}

#[test]
fn every_sample_parses_and_validates() {
    let samples = load_all();
    let kinds: Vec<JobKind> = samples.iter().map(|(_, spec)| spec.kind()).collect();
    for kind in JobKind::ALL {
        assert!(kinds.contains(&kind), "no sample of {kind:?}");
    }
    let readme = std::fs::read_to_string(samples_dir().join("README.md")).unwrap();
    for name in SAMPLES {
        assert!(readme.contains(name), "README.md does not mention {name}");
    }
}

#[test]
fn cpu_capable_samples_run_on_the_cpu_backend() {
    let mut cpu = CpuBackend::new();
    for (name, spec) in load_all() {
        let result = cpu.run(&spec, &RunLimits::default());
        if !spec.kind().runs_on_cpu() {
            assert!(matches!(result, Err(RunError::Unsupported { .. })), "{name}: {result:?}");
            continue;
        }
        let out = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.backend, "cpu");
        assert!(out.device_ms >= 1 && out.wall_ms >= 1, "{name}");
        assert_eq!(out.checksum.len(), 16, "{name}");
        match name.as_str() {
            "gemm_inline.json" => assert_eq!(out.values, vec![58.0, 64.0, 139.0, 154.0]),
            "gemm.json" => assert_eq!(out.values.len(), 8),
            "reduction.json" => assert_eq!(out.values.len(), 1),
            "vector_add.json" => assert_eq!(out.values[0], generate_f32(42, 0, 0) + generate_f32(42, 1, 0)),
            other => panic!("unexpected sample {other}"),
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-bench.sh runs it with --include-ignored"]
fn every_sample_runs_on_cuda() {
    let mut cuda = common::cuda_backend();
    let mut cpu = CpuBackend::new();
    for (name, spec) in load_all().into_iter().filter(|(_, spec)| spec.kind() != JobKind::TextGeneration) {
        let out = cuda.run(&spec, &RunLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.backend, "cuda");
        assert!(out.device_ms >= 1, "{name}");
        match spec.kind() {
            // The inference engine runs it, beside the compute backends.
            JobKind::TextGeneration => {}
            // Bit-identical across backends.
            JobKind::VectorAdd | JobKind::Reduction => {
                assert_eq!(out.checksum, cpu.run(&spec, &RunLimits::default()).unwrap().checksum, "{name}")
            }
            JobKind::Gemm => {
                let JobSpec::Gemm { m, n, k, dtype, seed, a, b, .. } = &spec else { unreachable!() };
                let (m, n, k) = (*m as usize, *n as usize, *k as usize);
                let operand = |input: &MatrixInput, stream: u64, len: usize| match input {
                    MatrixInput::Seed => common::generated(*seed, stream, len, *dtype),
                    MatrixInput::Inline { values } => values.iter().map(|&v| common::rounded(*dtype, v)).collect(),
                };
                let (a, b) = (operand(a, 0, m * k), operand(b, 1, k * n));
                let want = common::naive_gemm(&a, &b, m, n, k);
                let bound = common::abs_gemm(&a, &b, m, n, k);
                let shown = out.values.len();
                assert_eq!(shown, cpu.run(&spec, &RunLimits::default()).unwrap().values.len(), "{name}");
                common::assert_gemm_close(&out.values, &want[..shown], &bound[..shown], k, &name);
            }
            JobKind::Kernel => {
                // y = 2 x + y over the first 1000 of 1024 elements; x is stream 0, y stream 1.
                assert_eq!(out.values.len(), 1024);
                let want: Vec<f32> = (0..1024u64)
                    .map(|i| {
                        let (x, y) = (generate_f32(3, 0, i), generate_f32(3, 1, i));
                        if i < 1000 { 2.0f32.mul_add(x, y) } else { y }
                    })
                    .collect();
                for (i, (got, want)) in out.values.iter().zip(&want).enumerate() {
                    assert!((got - want).abs() <= 1e-6, "{name}: element {i}: {got} vs {want}");
                }
                assert_eq!(out.checksum, checksum_f32(&out.values));
            }
        }
    }
}
