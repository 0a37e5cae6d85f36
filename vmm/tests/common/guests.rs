//! The real-mode test programs under `tests/guests/`, built at test time with GNU as and
//! ld and wrapped as option ROMs (`vmm::option_rom::wrap_program`) for `--option-rom`.
//! Built ROMs are cached under `target/guests/`, keyed by a hash of the sources, the
//! symbols and the wrapper, so a test run assembles each program once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the `.S` sources live.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests")
}

/// `target/guests/` beside the `vmdesk-vmm` the tests run (target/<profile>/vmdesk-vmm).
fn cache_dir() -> PathBuf {
    let bin = Path::new(super::vmm_bin());
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("vmdesk-vmm lives in target/<profile>/");
    target.join("guests")
}

/// FNV-1a: a stable hash (std's hasher may change between Rust releases).
fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Builds `tests/guests/<program>.S` with `--defsym NAME=VALUE` for each of `defsyms`
/// and returns the option ROM's path, or `None` (after one SKIP line) when binutils is
/// missing and VMDESK_REQUIRE_TOOLS is not set. A failing build panics with the
/// assembler's message: the sources are ours.
pub fn option_rom(test: &str, program: &str, defsyms: &[(&str, i64)]) -> Option<PathBuf> {
    let as_ = super::tool_or_skip(test, "as")?;
    let ld = super::tool_or_skip(test, "ld")?;
    let src_dir = source_dir();
    let source = src_dir.join(format!("{program}.S"));

    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&src_dir)
        .expect("tests/guests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "inc"))
        .collect();
    inputs.sort();
    inputs.insert(0, source.clone());
    for p in &inputs {
        fnv1a(&mut hash, p.file_name().unwrap().as_encoded_bytes());
        fnv1a(
            &mut hash,
            &std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        );
    }
    for (name, value) in defsyms {
        fnv1a(&mut hash, format!("{name}={value};").as_bytes());
    }
    // The wrapper's layout is part of the output too.
    let probe = vmm::option_rom::wrap_program(&[0x90], program).unwrap();
    fnv1a(&mut hash, &probe);

    let suffix: String = defsyms.iter().map(|(n, v)| format!("-{n}{v}")).collect();
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let rom_path = dir.join(format!("{program}{suffix}-{hash:016x}.rom"));
    if rom_path.is_file() {
        return Some(rom_path);
    }

    // Tests run in parallel, in threads and processes: build under a name of our own,
    // then rename into place.
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let stem = format!(
        "{program}{suffix}-{}-{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join(format!("{stem}.tmp"));
    let obj = dir.join(format!("{stem}.o"));
    let flat = dir.join(format!("{stem}.bin"));
    let mut asm = Command::new(&as_);
    asm.arg("--32").arg("-I").arg(&src_dir);
    for (name, value) in defsyms {
        asm.arg("--defsym").arg(format!("{name}={value}"));
    }
    super::run(asm.arg("-o").arg(&obj).arg(&source));
    super::run(
        Command::new(&ld)
            .args(["-m", "elf_i386", "--oformat", "binary", "-e", "_start"])
            .arg(format!("-Ttext={:#x}", vmm::option_rom::PROGRAM_OFFSET))
            .arg("-o")
            .arg(&flat)
            .arg(&obj),
    );
    let program_bytes = std::fs::read(&flat).unwrap();
    let rom = vmm::option_rom::wrap_program(&program_bytes, &format!("vmdesk {program}{suffix}"))
        .unwrap();
    std::fs::write(&tmp, rom).unwrap();
    std::fs::rename(&tmp, &rom_path).unwrap();
    let _ = std::fs::remove_file(obj);
    let _ = std::fs::remove_file(flat);
    Some(rom_path)
}
