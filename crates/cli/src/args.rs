//! The command line, as clap types. One variant per command; each is
//! handled by the file of the same name in `commands/`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "podder", version, about = "Run deep-learning jobs on your own machines, with everything recorded")]
pub struct Cli {
    /// Also print the log (tracing) on stderr; `up`, `server`, `agent` and
    /// `demo` always write it to a log file, which they name
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a server and an agent in one process, with SQLite and a local store
    Up(ServeArgs),
    /// Start the API server alone
    Server(ServeArgs),
    /// Start an agent that pulls jobs from a server and runs them
    Agent(AgentArgs),
    /// Save a server address and token in the client config
    Login {
        /// The server's address, e.g. http://gpu-box:8600
        #[arg(long)]
        server: String,
        /// An API token (`podder server` prints the admin token on its first start)
        #[arg(long)]
        token: String,
    },
    /// Create or list projects
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Link the current directory to a project (created if missing); writes podder.yaml
    Init {
        /// Project name, or owner/name
        name: String,
    },
    /// Upload the code in this directory and run a command on an agent
    Run(RunArgs),
    /// Show a job, or list the project's jobs
    Status {
        /// The job: [OWNER/]PROJECT#N, or N for a job of the project (default: list the project's jobs)
        job: Option<String>,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print a job's logs
    Logs {
        /// The job: [OWNER/]PROJECT#N, or N for a job of this directory's project
        job: String,
        /// Project for a bare job number N: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Keep printing new lines until the job ends
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a job (SIGTERM to its processes, then SIGKILL after a grace period)
    Stop {
        /// The job: [OWNER/]PROJECT#N, or N for a job of this directory's project
        job: String,
        /// Project for a bare job number N: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
    },
    /// Run a job again with the same code, inputs and environment
    Restart {
        /// The job: [OWNER/]PROJECT#N, or N for a job of this directory's project
        job: String,
        /// Stream the new job's logs and exit with its exit code
        #[arg(long, short)]
        follow: bool,
        /// Project for a bare job number N: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print the new job as JSON
        #[arg(long)]
        json: bool,
    },
    /// Download a job's code snapshot into a directory
    Clone {
        /// The job: [OWNER/]PROJECT#N, or N for a job of this directory's project
        job: String,
        /// A new or empty directory (default: PROJECT-N); left out of this project's code uploads
        dir: Option<PathBuf>,
        /// Project for a bare job number N: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
    },
    /// List or download what a job left in /output
    Output {
        /// The job: [OWNER/]PROJECT#N, or N for a job of this directory's project
        job: String,
        /// Download into this new or empty directory instead of listing (left out of code uploads)
        #[arg(long, value_name = "DIR")]
        download: Option<PathBuf>,
        /// Only this directory inside the output
        #[arg(long)]
        path: Option<String>,
        /// Project for a bare job number N: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print the listing as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run a bundled example end to end on a fresh embedded server
    Demo {
        /// Where the demo's server keeps its data (default: a new temporary directory)
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Keep the server running after the demo, until Ctrl-C, to look at its jobs
        #[arg(long)]
        keep: bool,
        /// The address of the demo's server
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Datasets: upload versions, list, download, delete
    #[command(subcommand)]
    Data(DataCmd),
    /// Server administration (admin token)
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Environments: where jobs run (a Docker image, or a Python venv)
    #[command(subcommand)]
    Env(EnvCmd),
    /// Tasks: reusable steps built into images
    #[command(subcommand)]
    Task(TaskCmd),
    /// Pipelines: DAGs of steps with schedules, retries and caching
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// List the agents the server has seen, with their executors and GPUs
    Agents {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Where a job runs and what it may use (shared by `run` and `task run`).
#[derive(Args, Debug, Clone, Default)]
pub struct ResourceArgs {
    /// GPUs for the job (`--gpu` alone means 1)
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1", conflicts_with = "cpu")]
    pub gpu: Option<u32>,
    /// Run on CPU only (the default)
    #[arg(long)]
    pub cpu: bool,
    /// CPU limit in cores, e.g. 2 or 0.5
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. 512M or 4G
    #[arg(long)]
    pub memory: Option<String>,
    /// Run without network access
    #[arg(long)]
    pub no_network: bool,
}

#[derive(Subcommand, Debug)]
pub enum PipelineCmd {
    /// Create or update a pipeline from its file (the file's directory is the code of inline steps)
    Apply {
        /// The pipeline file (YAML)
        file: PathBuf,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the project's pipelines
    List {
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a pipeline: its steps, schedule and next run
    Show {
        /// The pipeline's name
        name: String,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Start a run
    Run {
        /// The pipeline's name
        name: String,
        /// A parameter the pipeline declares: K=V (repeatable)
        #[arg(long = "param", value_name = "K=V")]
        params: Vec<String>,
        /// Run this step alone, fed by the latest successful upstream outputs
        #[arg(long)]
        only: Option<String>,
        /// Show the steps live until the run ends; exit non-zero if it failed
        #[arg(long, short)]
        follow: bool,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// A run's steps: NAME/N (live with --follow)
    Status {
        /// The run: PIPELINE/N, e.g. nightly/3
        run: String,
        /// Keep showing the steps until the run ends
        #[arg(long, short)]
        follow: bool,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List a pipeline's runs
    Runs {
        /// The pipeline's name
        name: String,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run again from a step (default: from the failed steps), keeping what came before
    Retry {
        /// The run to retry: PIPELINE/N, e.g. nightly/3
        run: String,
        /// Run this step and everything downstream of it again, even when cached (default: the failed steps)
        #[arg(long)]
        from: Option<String>,
        /// Show the steps live until the run ends; exit non-zero if it failed
        #[arg(long, short)]
        follow: bool,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Pause the pipeline's schedule
    Pause {
        /// The pipeline's name
        name: String,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
    },
    /// Resume the pipeline's schedule
    Resume {
        /// The pipeline's name
        name: String,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
    },
    /// Cancel a run: NAME/N (its running steps are stopped)
    Cancel {
        /// The run: PIPELINE/N, e.g. nightly/3
        run: String,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnvCmd {
    /// Create an environment from an image, a Dockerfile or a requirements file
    Create {
        /// Environment name (yours; `--stock` for a shared one)
        name: String,
        /// A line describing the environment
        #[arg(long, default_value = "")]
        description: String,
        /// A Docker image (docker executor)
        #[arg(long)]
        image: Option<String>,
        /// The image for GPU jobs, when it differs
        #[arg(long)]
        gpu_image: Option<String>,
        /// A Dockerfile, built once on each docker agent and cached by its content
        #[arg(long)]
        dockerfile: Option<PathBuf>,
        /// A pip requirements file: a cached venv on process agents
        #[arg(long)]
        requirements: Option<PathBuf>,
        /// Make it a shared stock environment (admin)
        #[arg(long)]
        stock: bool,
        /// Replace an environment of the same name
        #[arg(long)]
        replace: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the stock environments and yours
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show one environment: NAME or OWNER/NAME
    Show {
        /// NAME (yours, else the stock one) or OWNER/NAME
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete one of your environments (jobs that used it keep what they ran)
    Delete {
        /// NAME (yours) or OWNER/NAME
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Scaffold a task directory: task.yaml, main.py, requirements.txt, Dockerfile, a sample input
    New {
        /// Task name: the directory to make and the name it is deployed under
        name: String,
        /// The template
        #[arg(long, default_value = "python")]
        template: String,
        /// The environment its image starts from
        #[arg(long, default_value = "python-3.11")]
        env: String,
        /// Where to make it (default: ./NAME)
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the task's image on a docker agent, from a directory or a Git repository
    Build {
        /// The task directory (default: the current directory)
        dir: Option<PathBuf>,
        /// Ship compiled bytecode only: no .py source in the image, docstrings stripped
        #[arg(long)]
        obfuscate: bool,
        /// Build from a Git repository instead: URL[#BRANCH|TAG|COMMIT]
        #[arg(long, value_name = "URL[#REF]")]
        git: Option<String>,
        /// Project (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// The queue of agents that may run it (default: "default")
        #[arg(long)]
        queue: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Register what a build built, so it runs by name
    Deploy {
        /// The build job (default: the project's newest successful build)
        build: Option<String>,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run a deployed task
    Run {
        /// The deployed task's name
        name: String,
        /// A parameter the task declares: K=V (repeatable)
        #[arg(long = "param", value_name = "K=V")]
        params: Vec<String>,
        /// INPUT=SRC (at the task's mount for INPUT) or SRC[:MOUNT]
        #[arg(long = "data")]
        data: Vec<String>,
        #[command(flatten)]
        resources: ResourceArgs,
        /// A note kept with the job (or version), shown by status
        #[arg(long, short)]
        message: Option<String>,
        /// The queue of agents that may run it (default: "default")
        #[arg(long)]
        queue: Option<String>,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Stream the logs and exit with the job's exit code
        #[arg(long, short)]
        follow: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the project's deployed tasks
    List {
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a deployed task
    Show {
        /// The task's name
        name: String,
        /// Project: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The address to listen on (HTTP API)
    #[arg(long, default_value = "127.0.0.1:8600", env = "PODDER_LISTEN")]
    pub listen: SocketAddr,
    /// Where the database and the object store live (default: ~/.local/share/podder)
    #[arg(long, env = "PODDER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds without a heartbeat after which a job's lease expires
    #[arg(long, default_value_t = 30)]
    pub lease_timeout: u64,
    /// Name of the first (admin) owner, created on first start
    #[arg(long, env = "PODDER_ADMIN")]
    pub admin: Option<String>,
    /// Agent slots (for `up`)
    #[arg(long, default_value_t = 2)]
    pub slots: usize,
    /// Job sandbox of the in-process agent (for `up`): auto (podder's own namespaces; the agent refuses to start
    /// where the host forbids them), bwrap (bubblewrap), or none (jobs unsandboxed)
    #[arg(long, default_value = "auto")]
    pub sandbox: String,
    /// Per-owner storage quota in bytes (datasets and job outputs); off when not given
    #[arg(long, env = "PODDER_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,
    /// Seconds during which `admin gc` spares chunks and manifests just uploaded
    #[arg(long, default_value_t = 3600)]
    pub gc_grace: u64,
    /// Size limit of the in-process agent's cache (for `up`), in bytes
    #[arg(long)]
    pub cache_bytes: Option<u64>,
    /// The in-process agent's executor (for `up`): process or docker
    #[arg(long, default_value = "process")]
    pub executor: String,
    /// The in-process agent's GPUs (for `up`): auto, none, or indices such as 0,1
    #[arg(long, default_value = "auto")]
    pub gpus: String,
    /// Take no files by descriptor from clients on this machine (uploads then
    /// send every byte over HTTP)
    #[arg(long)]
    pub no_local_ingest: bool,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The server's address, e.g. http://gpu-box:8600 (default: the client config)
    #[arg(long, env = "PODDER_SERVER")]
    pub server: Option<String>,
    /// An admin API token (default: the client config)
    #[arg(long, env = "PODDER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The queue this agent takes jobs from
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// How many jobs run at once
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// Agent name (default: the host name)
    #[arg(long)]
    pub name: Option<String>,
    /// Work directory for job workspaces and caches
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Job sandbox: auto (podder's own namespaces; the agent refuses to start where the host forbids them),
    /// bwrap (bubblewrap), or none (jobs unsandboxed)
    #[arg(long, default_value = "auto")]
    pub sandbox: String,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped
    #[arg(long, default_value_t = 10)]
    pub stop_grace: u64,
    /// Size limit of the dataset and chunk cache, in bytes
    /// (default: the smaller of 50 GiB and a quarter of the work directory's disk)
    #[arg(long)]
    pub cache_bytes: Option<u64>,
    /// How jobs run: process (bubblewrap) or docker
    #[arg(long, default_value = "process")]
    pub executor: String,
    /// GPUs to offer: auto (detect NVIDIA GPUs), none, or indices such as 0,1
    #[arg(long, default_value = "auto")]
    pub gpus: String,
    /// The user jobs run as in containers (docker executor)
    #[arg(long, default_value = "1000:1000")]
    pub docker_user: String,
    /// The network of job containers (docker executor): podder (an isolated
    /// bridge network, made when missing), bridge (the engine's default),
    /// host (the host's network, every service on it included) or the name
    /// of an existing network; --no-network jobs get none
    #[arg(long, env = "PODDER_DOCKER_NETWORK", default_value = "podder")]
    pub docker_network: String,
    /// The image for docker jobs that name no environment
    #[arg(long)]
    pub default_image: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// Create a project
    Create {
        /// Project name, or owner/name
        name: String,
        /// A line describing the project
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List your projects
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Mount a dataset or job output: SRC[:MOUNT], e.g. mnist#12/model:/model
    #[arg(long = "data", value_name = "SRC[:MOUNT]")]
    pub data: Vec<String>,
    /// A command run before the main command (repeatable)
    #[arg(long)]
    pub setup: Vec<String>,
    /// A parameter, given to the job as PODDER_PARAM_<K> (repeatable)
    #[arg(long = "param", value_name = "K=V")]
    pub params: Vec<String>,
    /// A note kept with the job (or version), shown by status
    #[arg(long, short)]
    pub message: Option<String>,
    /// Stream the logs and exit with the job's exit code
    #[arg(long, short)]
    pub follow: bool,
    /// Kill the job after this long: 90, 90s, 10m, 2h
    #[arg(long)]
    pub timeout: Option<String>,
    /// Run again this many times if the job's agent is lost
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// The queue of agents that may run it (default: "default")
    #[arg(long)]
    pub queue: Option<String>,
    /// Project (default: the one in podder.yaml)
    #[arg(long)]
    pub project: Option<String>,
    /// Environment (default: podder.yaml's `env`, else the agent's own Python)
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Code directory to upload (default: the current directory)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Largest code snapshot allowed, in bytes (default 1 GiB)
    #[arg(long, env = "PODDER_MAX_CODE_BYTES", default_value_t = 1 << 30)]
    pub max_code_bytes: u64,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Words typed before `--`: never a command (run.rs says where it goes)
    #[arg(hide = true, allow_hyphen_values = true)]
    pub stray: Vec<String>,
    /// The command to run, after --: one argument is shell text, several an argv
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Create an empty dataset
    Create {
        /// Dataset name
        name: String,
        /// A line describing the dataset
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Upload a directory as the dataset's next version (the dataset is created if missing)
    Upload {
        /// Dataset name, or owner/name
        name: String,
        /// The directory to upload (everything in it except .git)
        dir: PathBuf,
        /// A note kept with the job (or version), shown by status
        #[arg(long, short)]
        message: Option<String>,
        /// Hash every file again instead of trusting the local stat cache
        #[arg(long)]
        rehash: bool,
        /// Send every byte over HTTP, even to a server on this machine (which
        /// otherwise reads files of 4 MiB and more itself, by descriptor)
        #[arg(long)]
        over_http: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the datasets you can see
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List a dataset's versions
    Versions {
        /// Dataset name, or owner/name
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the files of a version: NAME[@N] [PATH]
    Ls {
        /// NAME, NAME@N or owner/NAME@N (default: the latest version)
        dataset: String,
        /// Only what lies under this path
        path: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Download a version into a directory
    Download {
        /// NAME, NAME@N or owner/NAME@N (default: the latest version)
        dataset: String,
        /// A new or empty directory to write the files into
        dir: PathBuf,
        /// Only this directory inside the version
        #[arg(long)]
        path: Option<String>,
    },
    /// Delete one version (NAME@N), or a whole dataset with all its versions (NAME)
    Delete {
        /// NAME@N or owner/NAME@N for one version; NAME for the dataset and every version
        dataset: String,
        /// Delete a whole dataset without asking (needed when not on a terminal)
        #[arg(long, short)]
        yes: bool,
    },
    /// Make a job's output the next version of a dataset (created if missing); nothing is copied
    FromOutput {
        /// The job: [OWNER/]PROJECT#N, e.g. mnist#12, or N for a job of this directory's project
        job: String,
        /// Dataset name
        name: String,
        /// A note kept with the version
        #[arg(long, short)]
        message: Option<String>,
        /// Project for a bare job number N: [OWNER/]NAME (default: the one in podder.yaml)
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Delete the chunks and manifests that nothing refers to any more
    Gc {
        /// Only report what would be freed
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && !a.is_hide_set() && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "podder", &mut missing);
        assert!(missing.is_empty(), "arguments without help text:\n{}", missing.join("\n"));
    }

    /// Job arguments say their form, and following has a short flag everywhere.
    #[test]
    fn job_arguments_show_their_form() {
        let mut cmd = Cli::command();
        for name in ["status", "logs", "stop", "restart", "clone", "output"] {
            let sub = cmd.find_subcommand_mut(name).unwrap();
            let job = sub.get_arguments().find(|a| a.get_id() == "job").unwrap();
            assert!(job.get_help().unwrap().to_string().contains("PROJECT#N"), "{name}");
            assert!(sub.get_arguments().any(|a| a.get_id() == "project"), "{name} takes --project");
        }
        let restart = cmd.find_subcommand_mut("restart").unwrap();
        assert!(restart.get_arguments().any(|a| a.get_id() == "follow" && a.get_short() == Some('f')));
    }
}
