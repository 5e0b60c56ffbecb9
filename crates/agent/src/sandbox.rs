//! How a job's process is isolated: finding and probing bubblewrap, and
//! building the command line (bwrap arguments, or a plain `/bin/sh`), the
//! job's script and its environment.
//!
//! Inside bubblewrap a job sees only the system directories (read-only),
//! `/code`, `/output`, its inputs (read-only) and fresh `/tmp`, `/proc` and
//! `/dev`; the variables name those in-sandbox paths. Unsandboxed, it runs
//! in its code directory on the host and the variables name the real paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use podder_core::MountPath;
use tokio::process::Command;

use crate::SandboxMode;
use crate::executor::JobPlan;
use crate::native::Native;

/// The `PATH` every job starts with.
pub const JOB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// System directories shown read-only inside the sandbox besides `/usr`
/// (a host symlink such as `/bin -> usr/bin` is recreated as a symlink).
const SYSTEM_DIRS: [&str; 7] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt"];
/// Extra read-only paths: the resolver's files, which `/etc/resolv.conf`
/// points into on systemd hosts (without them DNS fails in the job).
const EXTRA_RO: [&str; 1] = ["/run/systemd/resolve"];

/// The warning a job gets when it runs without a sandbox.
pub const UNSANDBOXED_WARNING: &str = "warning: this job runs unsandboxed (the agent was started with \
     --sandbox none): it can read what the agent's user can; paths are given by PODDER_CODE, PODDER_OUTPUT \
     and PODDER_MOUNT_*";

/// A resolved sandbox: what [`SandboxMode`] turned into on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sandbox {
    /// podder's own (see [`crate::native`]): the default.
    Native(Native),
    /// Run through this bubblewrap binary (kept as an option, and to
    /// measure the native sandbox beside it).
    Bubblewrap(PathBuf),
    /// Run directly on the host (only when asked for: `--sandbox none`).
    None,
}

impl Sandbox {
    /// Resolves a mode. `Auto` and `Native` are the native sandbox, checked
    /// once here: where this machine cannot create its namespaces the agent
    /// refuses to start, with the setting to change, rather than run jobs
    /// unsandboxed. `Bubblewrap` fails when bwrap is missing or broken.
    pub async fn resolve(mode: SandboxMode) -> anyhow::Result<Sandbox> {
        match mode {
            SandboxMode::None => Ok(Sandbox::None),
            SandboxMode::Auto | SandboxMode::Native => {
                let native = Native::for_this_user();
                crate::native::probe(&native)?;
                Ok(Sandbox::Native(native))
            }
            SandboxMode::Bubblewrap => {
                let bwrap = find_bwrap().ok_or_else(|| {
                    anyhow::anyhow!(
                        "bubblewrap (bwrap) was not found on PATH: install it (e.g. `apt-get install bubblewrap`) \
                         or use the default sandbox"
                    )
                })?;
                probe(&bwrap).await?;
                Ok(Sandbox::Bubblewrap(bwrap))
            }
        }
    }

    pub fn is_sandboxed(&self) -> bool {
        !matches!(self, Sandbox::None)
    }
}

/// The first executable `bwrap` on `PATH`.
pub fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("bwrap")).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Runs a trivial sandbox to see that bwrap works on this machine.
async fn probe(bwrap: &Path) -> anyhow::Result<()> {
    let out = Command::new(bwrap)
        .args(["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/"])
        .args(["--proc", "/proc", "--dev", "/dev", "--", "/bin/sh", "-c", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bwrap.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} does not work here ({}): {}",
            bwrap.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The job's shell script: `set -e`, each setup command on its own line,
/// then the command: one element is shell text used verbatim, several are
/// an argv run with `exec`.
pub fn build_script(setup: &[String], command: &[String]) -> String {
    let mut s = String::from("set -e\n");
    for line in setup {
        s.push_str(line);
        s.push('\n');
    }
    match command {
        [] => {}
        [one] => s.push_str(one),
        argv => {
            s.push_str("exec");
            for a in argv {
                s.push(' ');
                s.push_str(&shell_quote(a));
            }
        }
    }
    s.push('\n');
    s
}

/// Quotes a word for `/bin/sh`; plain words stay as they are.
pub fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(plain) { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// The descriptor on which bubblewrap reports its sandbox's init (`--info-fd`):
/// the spawner must have it open for writing in the child.
pub(crate) const INFO_FD: i32 = 3;

/// How to start `plan`'s process: program, arguments, the whole
/// environment, and the working directory (unsandboxed only). Under
/// bubblewrap the spawner must give the child [`INFO_FD`]; the caller adds
/// stdio, the process group and the parent-death signal.
pub(crate) struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

pub(crate) fn invocation(plan: &JobPlan) -> Invocation {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), JOB_PATH.into()),
        ("HOME".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    env.extend(plan.env.iter().cloned());
    if let Some(server) = &plan.server {
        let url = match (&plan.sandbox, plan.no_network) {
            (Sandbox::Native(_), true) => format!("http://127.0.0.1:{}", server.inside_port()),
            _ => server.url.clone(),
        };
        env.push(("PODDER_SERVER".into(), url));
    }
    let sandboxed_env = |env: &mut Vec<(String, String)>| {
        env.push(("PODDER_CODE".into(), "/code".into()));
        env.push(("PODDER_OUTPUT".into(), "/output".into()));
        for (_, mount) in &plan.inputs {
            env.push((format!("PODDER_MOUNT_{}", mount.env_suffix()), mount.to_string()));
        }
    };
    match &plan.sandbox {
        Sandbox::Native(_) => {
            sandboxed_env(&mut env);
            let args = vec!["-c".to_string(), plan.script.clone()];
            Invocation { program: "/bin/sh".into(), args, env, cwd: None }
        }
        Sandbox::Bubblewrap(bwrap) => {
            sandboxed_env(&mut env);
            let mut args = vec!["--info-fd".to_string(), INFO_FD.to_string()];
            args.extend(bwrap_args(plan));
            args.extend(["--".into(), "/bin/sh".into(), "-c".into(), plan.script.clone()]);
            Invocation { program: bwrap.clone(), args, env, cwd: None }
        }
        Sandbox::None => {
            env.push(("PODDER_CODE".into(), display(&plan.code_dir)));
            env.push(("PODDER_OUTPUT".into(), display(&plan.output_dir)));
            for (tree, mount) in &plan.inputs {
                env.push((format!("PODDER_MOUNT_{}", mount.env_suffix()), display(tree)));
            }
            let args = vec!["-c".to_string(), plan.script.clone()];
            Invocation { program: "/bin/sh".into(), args, env, cwd: Some(plan.code_dir.clone()) }
        }
    }
}

/// The command that runs `plan` unsandboxed, with its environment set.
pub(crate) fn command(plan: &JobPlan) -> Command {
    let inv = invocation(plan);
    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args).env_clear().envs(inv.env);
    if let Some(dir) = &inv.cwd {
        cmd.current_dir(dir);
    }
    cmd
}

fn display(p: &Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).to_string_lossy().into_owned()
}

/// The bubblewrap options for `plan` (everything before `--`).
pub(crate) fn bwrap_args(plan: &JobPlan) -> Vec<String> {
    // No capabilities: an agent running as root would otherwise hand them
    // to the job, which could then unmount what hides paths or remount its
    // inputs writable.
    let mut a: Vec<String> =
        ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
            .map(String::from)
            .into();
    if plan.no_network {
        a.push("--unshare-net".into());
    }
    // (host directory, where it appears in the sandbox), to place hide paths.
    let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
    binds.extend(canonical("/usr").map(|c| (c, "/usr".into())));
    for d in SYSTEM_DIRS {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(d) {
                    push(&mut a, ["--symlink", &target.to_string_lossy(), d]);
                }
            }
            _ => {
                push(&mut a, ["--ro-bind-try", d, d]);
                binds.extend(canonical(d).map(|c| (c, d.into())));
            }
        }
    }
    for d in EXTRA_RO {
        push(&mut a, ["--ro-bind-try", d, d]);
        binds.extend(canonical(d).map(|c| (c, d.into())));
    }
    push(&mut a, ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    let code = display(&plan.code_dir);
    let output = display(&plan.output_dir);
    push(&mut a, ["--bind", &code, "/code", "--bind", &output, "/output"]);
    binds.extend(canonical(&code).map(|c| (c, "/code".into())));
    binds.extend(canonical(&output).map(|c| (c, "/output".into())));
    for (tree, mount) in &plan.inputs {
        let tree = display(tree);
        push(&mut a, ["--ro-bind", &tree, mount.as_str()]);
        binds.extend(canonical(&tree).map(|c| (c, mount_dir(mount))));
    }
    let mut hidden = BTreeSet::new();
    for h in plan.hide.iter().map(PathBuf::as_path).chain(crate::native::layout::SECRETS.iter().map(Path::new)) {
        let Some(host) = canonical(h) else { continue };
        let is_dir = host.is_dir();
        for (src, dest) in &binds {
            if let Ok(rest) = host.strip_prefix(src) {
                let inside = dest.join(rest).to_string_lossy().into_owned();
                if hidden.insert(inside.clone()) {
                    if is_dir {
                        push(&mut a, ["--tmpfs", &inside]);
                    } else {
                        push(&mut a, ["--ro-bind", "/dev/null", &inside]);
                    }
                }
            }
        }
    }
    // After the hiding, so that these show even inside a hidden directory.
    for d in &plan.extra_ro {
        let d = display(d);
        push(&mut a, ["--ro-bind", &d, &d]);
    }
    push(&mut a, ["--chdir", "/code"]);
    a
}

fn mount_dir(m: &MountPath) -> PathBuf {
    PathBuf::from(m.as_str())
}

fn canonical(p: impl AsRef<Path>) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

fn push<const N: usize>(args: &mut Vec<String>, items: [&str; N]) {
    args.extend(items.iter().map(|s| s.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts() {
        let s = build_script(&["pip install x".into()], &["python train.py && echo ok".into()]);
        assert_eq!(s, "set -e\npip install x\npython train.py && echo ok\n");
        let s = build_script(&[], &["python".into(), "-c".into(), "print('hi there')".into()]);
        assert_eq!(s, "set -e\nexec python -c 'print('\\''hi there'\\'')'\n");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("--lr=0.1"), "--lr=0.1");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    /// What a cached input adds to a job's start: one read-only bind of its
    /// tree (and one variable), nothing proportional to the tree's size.
    #[test]
    fn a_cached_input_is_one_read_only_bind() {
        let work = tempfile::tempdir().unwrap();
        let (job, tree) = (work.path().join("jobs/lease-1"), work.path().join("cache/trees/abc"));
        for d in [job.join("code"), job.join("output"), tree.join("sub")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let bare = JobPlan {
            script: "true".into(),
            env: vec![],
            code_dir: job.join("code"),
            output_dir: job.join("output"),
            inputs: vec![],
            hide: vec![work.path().to_path_buf()],
            extra_ro: vec![],
            sandbox: Sandbox::Bubblewrap("/usr/bin/bwrap".into()),
            timeout: None,
            stop_grace: std::time::Duration::from_secs(1),
            limits: Default::default(),
            no_network: false,
            server: None,
        };
        let mount: MountPath = "/data/d".parse().unwrap();
        let with_input = JobPlan { inputs: vec![(tree.clone(), mount.clone())], ..bare.clone() };
        let (a, mut b) = (bwrap_args(&bare), bwrap_args(&with_input));
        let bind = ["--ro-bind".to_string(), display(&tree), "/data/d".to_string()];
        let at = b.windows(3).position(|w| w == bind).expect("the input is bound read-only");
        b.drain(at..at + 3);
        assert_eq!(a, b, "nothing else differs");
        let envs = |p: &JobPlan| command(p).as_std().get_envs().count();
        assert_eq!(envs(&with_input), envs(&bare) + 1);
    }
}
