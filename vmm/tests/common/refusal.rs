//! Running vmdesk-vmm with options it must refuse: exit code 2 and one line on stderr.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a VMM may take to refuse its options (with networking it starts passt before it
/// can tell whether a forward's port is free). One that still runs then has accepted them:
/// a failure, not a hang.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs vmdesk-vmm with `args` and the environment changes `env`; its exit code and stderr.
pub fn run_vmm_to_refusal(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    // Tests run in parallel: a directory each (temp_dir empties the one it names).
    let test = std::thread::current()
        .name()
        .unwrap_or("t")
        .replace("::", "-");
    let dir = super::temp_dir(&format!("refusal-{test}"));
    let err_path = dir.join("stderr");
    let mut child = Command::new(super::vmm_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start vmdesk-vmm");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > REFUSE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?}: vmdesk-vmm still ran after {REFUSE_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (status.code().unwrap_or(-1), err)
}

/// Exit 2 and exactly one line that starts with our name and contains every one of `words`.
pub fn assert_usage_error(args: &[&str], env: &[(&str, &str)], words: &[&str]) {
    let (code, err) = run_vmm_to_refusal(args, env);
    assert_eq!(code, 2, "{args:?}: exit code {code}, stderr: {err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got: {err}");
    assert!(lines[0].starts_with("vmdesk-vmm: "), "{err}");
    for w in words {
        assert!(lines[0].contains(w), "{args:?}: '{w}' missing from: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}
