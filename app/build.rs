//! Builds the demo VM's boot image from source (`demo/demo.S`, 16-bit real mode) with GNU
//! as and ld into `$OUT_DIR/demo.bin`, which `src/demo.rs` embeds. Without binutils the
//! build stops with one line naming the package.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "demo/demo.S";
/// What the boot sector's single int 13h read may load (SeaBIOS's limit for one call).
const MAX_SECTORS: usize = 127;

/// Stops the build with `msg` as its one error line (`cargo::error` fails the build; a
/// non-zero exit would add a dump of this script's output below it).
fn fail(msg: &str) -> ! {
    println!("cargo::error={msg}");
    std::process::exit(0);
}

fn run(tool: &str, cmd: &mut Command) {
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => fail(&format!(
            "{tool} failed on {SOURCE}: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(&format!(
            "`{tool}` (GNU binutils) is needed to build the demo VM's boot image: install the binutils package (apt-get install binutils, or resources/scripts/install-deps.sh run)"
        )),
        Err(e) => fail(&format!("cannot run `{tool}`: {e}")),
    }
}

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("demo.o");
    let bin = out.join("demo.bin");
    let src = Path::new(SOURCE);

    run(
        "as",
        Command::new("as").arg("--32").arg("-o").arg(&obj).arg(src),
    );
    run(
        "ld",
        Command::new("ld")
            .args(["-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary"])
            .args(["-e", "_start", "-o"])
            .arg(&bin)
            .arg(&obj),
    );

    // The boot sector's contract: a 0x55AA-signed sector, then whole sectors it can load
    // in one read.
    let image = std::fs::read(&bin).unwrap_or_else(|e| fail(&format!("{}: {e}", bin.display())));
    if image.len() < 1024 || image.len() % 512 != 0 || image[510..512] != [0x55, 0xaa] {
        fail(&format!(
            "{SOURCE} built to {} bytes: not a signed boot sector followed by whole sectors",
            image.len()
        ));
    }
    if image.len() / 512 - 1 > MAX_SECTORS {
        fail(&format!(
            "{SOURCE} grew past {MAX_SECTORS} sectors after its boot sector: load it in parts"
        ));
    }
}
