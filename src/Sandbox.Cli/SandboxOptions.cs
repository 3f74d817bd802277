using System.Collections.Immutable;
using Sandbox.Cli.CommandLine;
using Sandbox.Cgroups;

namespace Sandbox.Cli;

/// <summary>The options every sandboxing command shares (run, test), named as docker and podman name them.</summary>
internal sealed class SandboxOptions
{
    private readonly Option<string[]> _volumes = new("--volume", "-v")
    {
        Description = "Bind a host path: HOST:CONTAINER[:ro|rw] (repeatable)",
        HelpName = "HOST:CONTAINER[:ro]",
    };
    private readonly Option<string[]> _tmpfs = new("--tmpfs")
    {
        Description = "Mount a fresh tmpfs at PATH (repeatable)",
        HelpName = "PATH",
    };
    private readonly Option<string[]> _env = new("--env", "-e")
    {
        Description = "Set NAME=VALUE inside, or pass the host's NAME through (repeatable). Nothing else of the host's environment gets in",
        HelpName = "NAME[=VALUE]",
    };
    private readonly Option<string[]> _envFile = new("--env-file")
    {
        Description = "Read variables from FILE, docker's format: NAME=VALUE or NAME (the host's) per line, # comments (repeatable; -e wins)",
        HelpName = "FILE",
    };
    private readonly Option<bool> _remove = new("--rm")
    {
        Description = "Accepted for docker's sake: every sandbox is removed when it ends",
    };
    private readonly Option<bool> _tty = new("--tty", "-t")
    {
        Description = "Accepted for docker's sake, with a warning: no terminal is allocated; output goes through pipes (-i forwards stdin)",
    };
    private readonly Option<string> _hostname = new("--hostname")
    {
        Description = "Hostname inside the sandbox",
        DefaultValue = "sandbox",
    };
    private readonly Option<string> _network = new("--network")
    {
        Description = "none: a private network with loopback up (default); host: the host's network",
        DefaultValue = "none",
    };
    private readonly Option<string> _userns = new("--userns")
    {
        Description = "Id mapping: auto (a subuid range when available), single (0 -> you), subuid",
        DefaultValue = "auto",
    };
    private readonly Option<string?> _timeout = new("--timeout")
    {
        Description = "Kill the whole sandbox after DURATION (e.g. 30s, 5m, 1h) and exit 124 (`test`: restore and test together); 0: no timeout",
        HelpName = "DURATION",
    };
    private readonly Option<bool> _interactive = new("--interactive", "-i")
    {
        Description = "Forward stdin even when it is a terminal (a pipe or file is always forwarded)",
    };
    private readonly Option<string> _events = new("--events")
    {
        Description = "Output format: console (the payload's bytes, unchanged) or json (JSON lines of events)",
        DefaultValue = "console",
    };
    private readonly Option<string?> _memory = new("--memory", "-m")
    {
        Description = "Memory limit, e.g. 512m or 2g (cgroup memory.max); the OOM killer ends what goes over",
        HelpName = "SIZE",
    };
    private readonly Option<string?> _memorySwap = new("--memory-swap")
    {
        Description = "Memory plus swap, e.g. 1g; -1 for unlimited swap (default: as much swap as memory)",
        HelpName = "SIZE",
    };
    private readonly Option<long?> _pidsLimit = new("--pids-limit")
    {
        Description = "Maximum number of processes and threads of the command (cgroup pids.max, which also counts the sandbox's own PID 1); 0 or -1: no limit",
        HelpName = "N",
    };
    private readonly Option<double?> _cpus = new("--cpus")
    {
        Description = "CPU time, in CPUs, e.g. 1.5 (cgroup cpu.max); 0: no limit",
        HelpName = "N",
    };
    private readonly Option<string[]> _deviceReadBps = new("--device-read-bps")
    {
        Description = "Read rate limit for a block device, e.g. /dev/sda:10mb (cgroup io.max)",
        HelpName = "DEVICE:RATE",
    };
    private readonly Option<string[]> _deviceWriteBps = new("--device-write-bps")
    {
        Description = "Write rate limit for a block device, e.g. /dev/sda:10mb (cgroup io.max)",
        HelpName = "DEVICE:RATE",
    };
    private readonly Option<string> _limits = new("--limits")
    {
        Description = "required (default): exit 125 when limits cannot be enforced; best-effort: run without them, with a warning",
        DefaultValue = "required",
    };
    private readonly Option<bool> _stats = new("--stats")
    {
        Description = "Print wall time, CPU time and peak memory on stderr at the end",
    };
    private readonly Option<string[]> _capAdd = new("--cap-add")
    {
        Description = "Add a capability to docker's default set inside the sandbox's user namespace (e.g. NET_ADMIN, or ALL); repeatable",
        HelpName = "CAP",
    };
    private readonly Option<string[]> _capDrop = new("--cap-drop")
    {
        Description = "Drop a capability from docker's default set (or ALL); repeatable",
        HelpName = "CAP",
    };
    private readonly Option<string[]> _securityOpt = new("--security-opt")
    {
        Description = "seccomp=unconfined turns the default seccomp filter off; seccomp=PROFILE.json uses a profile in Docker's format",
        HelpName = "OPT",
    };
    private readonly Option<string?> _user = new("--user", "-u")
    {
        Description = "Run as USER[:GROUP] (names or ids) inside; default: the image's user, else root. Ids other than 0 need a subordinate range",
        HelpName = "USER[:GROUP]",
    };
    private readonly Option<bool> _privileged = new("--privileged")
    {
        Description = "Every capability (still only inside the sandbox's user namespace) and no seccomp filter: for trusted payloads that need them",
    };
    public IEnumerable<Option> All =>
    [
        _volumes, _tmpfs, _env, _envFile, _remove, _tty, _hostname, _network, _userns, _timeout, _interactive, _events,
        _memory, _memorySwap, _pidsLimit, _cpus, _deviceReadBps, _deviceWriteBps, _limits, _stats,
        _capAdd, _capDrop, _securityOpt, _privileged, _user,
    ];

    /// <summary>--userns: also how an image imported for the run owns its files.</summary>
    public UserNamespaceMode UserNamespace(ParseResult parse) => ParseUserNamespace(parse.GetValue(_userns));

    internal static UserNamespaceMode ParseUserNamespace(string? value) => value switch
    {
        null or "auto" => UserNamespaceMode.Auto,
        "single" => UserNamespaceMode.Single,
        "subuid" => UserNamespaceMode.Subuid,
        var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--userns {other}: expected auto, single or subuid"),
    };

    /// <summary>Applies the parsed options to <paramref name="baseSpec"/>.</summary>
    public SandboxSpec Apply(ParseResult parse, SandboxSpec baseSpec)
    {
        var spec = baseSpec with
        {
            Hostname = parse.GetValue(_hostname) is string hostname ? CheckHostname(hostname) : SandboxSpec.DefaultHostname,
            Network = parse.GetValue(_network) switch
            {
                "none" => NetworkMode.None,
                "host" => NetworkMode.Host,
                var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--network {other}: expected none or host"),
            },
            UserNamespace = UserNamespace(parse),
            // GNU timeout(1): a duration of 0 means no timeout (scripts pass --timeout ${T:-0}).
            Timeout = parse.GetValue(_timeout) is string t && !IsZero(t) ? DurationParser.Parse(t, "--timeout") : null,
            TmpfsMounts = baseSpec.TmpfsMounts.AddRange(parse.GetValue(_tmpfs) ?? []),
            Binds = baseSpec.Binds.AddRange(Parsed(parse.GetValue(_volumes), BindMount.Parse)),
            ForwardStdin = parse.GetValue(_interactive) || Console.IsInputRedirected,
            Limits = new ResourceLimits
            {
                MemoryBytes = parse.GetValue(_memory) is string m ? Sizes.Parse(m, "--memory") : null,
                MemoryAndSwapBytes = parse.GetValue(_memorySwap) switch
                {
                    null => null,
                    "-1" => -1,
                    string ms => Sizes.Parse(ms, "--memory-swap"),
                },
                // docker and podman: 0 or -1 is no limit.
                PidsLimit = parse.GetValue(_pidsLimit) is long pids and > 0 ? pids : null,
                // docker: --cpus 0 is no limit.
                Cpus = parse.GetValue(_cpus) is double cpus and not 0 ? cpus : null,
                DeviceReadBps = Parsed(parse.GetValue(_deviceReadBps), v => DeviceRate.Parse(v, "--device-read-bps")),
                DeviceWriteBps = Parsed(parse.GetValue(_deviceWriteBps), v => DeviceRate.Parse(v, "--device-write-bps")),
            },
            LimitsPolicy = parse.GetValue(_limits) switch
            {
                "required" => LimitsPolicy.Required,
                "best-effort" => LimitsPolicy.BestEffort,
                var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--limits {other}: expected required or best-effort"),
            },
        };
        spec.Limits.Validate();
        // Usage is measured when someone will read it: --stats, or the JSON events (the MSBuild task).
        spec = spec with { CollectUsage = parse.GetValue(_stats) || parse.GetValue(_events) == "json" };
        spec = spec with
        {
            User = parse.GetValue(_user) ?? spec.User,
            CapAdd = spec.CapAdd.AddRange(parse.GetValue(_capAdd) ?? []),
            CapDrop = spec.CapDrop.AddRange(parse.GetValue(_capDrop) ?? []),
        };
        foreach (string opt in parse.GetValue(_securityOpt) ?? [])
        {
            spec = opt switch
            {
                "seccomp=unconfined" or "seccomp:unconfined" => spec with { Seccomp = SeccompPolicy.Unconfined },
                "no-new-privileges" or "no-new-privileges=true" or "no-new-privileges:true" => spec, // always on
                _ when opt.StartsWith("seccomp=", StringComparison.Ordinal) || opt.StartsWith("seccomp:", StringComparison.Ordinal) =>
                    spec with { Seccomp = SeccompPolicy.FromFile(Path.GetFullPath(opt[8..])) },
                _ => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--security-opt {opt}: supported are seccomp=unconfined and seccomp=PROFILE.json"),
            };
        }
        if (parse.GetValue(_privileged))
            spec = spec with { CapAdd = spec.CapAdd.Add("ALL"), Seccomp = SeccompPolicy.Unconfined };
        if (parse.GetValue(_tty))
            StandardDescriptors.TellError("sandbox: warning: -t/--tty: no terminal is allocated; the command's output goes through pipes (-i forwards stdin)");
        foreach (string file in parse.GetValue(_envFile) ?? [])
        {
            foreach (string e in EnvFileLines(file))
                spec = WithVariable(spec, e, "--env-file " + file);
        }
        foreach (string e in parse.GetValue(_env) ?? [])
            spec = WithVariable(spec, e, "-e " + e);
        return spec;
    }

    /// <summary>docker's --env-file: NAME=VALUE or NAME per line; blank lines and lines starting with # are skipped; no quotes are removed.</summary>
    private static IEnumerable<string> EnvFileLines(string file)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--env-file {file}: {e.Message}");
        }
        foreach (string line in lines)
        {
            string trimmed = line.TrimStart();
            if (trimmed.Length > 0 && trimmed[0] != '#')
                yield return trimmed;
        }
    }

    private static SandboxSpec WithVariable(SandboxSpec spec, string e, string option)
    {
        int eq = e.IndexOf('=');
        if (eq == 0)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{option}: missing the variable's name");
        if (eq > 0)
            return spec.WithEnvironment(e[..eq], e[(eq + 1)..]);
        // docker: NAME alone passes the host's value, if it is set.
        return Environment.GetEnvironmentVariable(e.TrimEnd()) is string value ? spec.WithEnvironment(e.TrimEnd(), value) : spec;
    }

    public bool Stats(ParseResult parse) => parse.GetValue(_stats);

    public string EventsFormat(ParseResult parse) => parse.GetValue(_events) switch
    {
        "console" => "console",
        "json" => "json",
        var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--events {other}: expected console or json"),
    };

    /// <summary>
    /// Splits a command's tokens into its own options (and up to <paramref name="maxPositionals"/>
    /// words for which <paramref name="isOwnPositional"/> holds) and what follows: as with docker,
    /// option parsing stops at the first other word, or at --, so the payload's own flags are never
    /// taken for ours.
    /// </summary>
    /// <param name="helpRequested">Whether -h, --help or -? stood among the command's own options (not as a value, not among the payload's words: <c>sandbox run df -h</c> runs <c>df -h</c>).</param>
    /// <param name="stopAfterPositionals">
    /// Whether our options end with the last positional, as docker's end at the IMAGE: everything
    /// after `sandbox run ROOT` is the command's (`sandbox run IMAGE --version` gives --version to the
    /// image's entrypoint), a `--` right after it aside.
    /// </param>
    public static (List<string> OwnTokens, ImmutableArray<string> Remainder) Split(Command command, IReadOnlyList<string> tokens, Func<string, bool> isOwnPositional, int maxPositionals,
        out bool helpRequested, bool stopAfterPositionals = false)
    {
        helpRequested = false;
        var own = new List<string>();
        int positionals = 0;
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i];
            if (t == "--")
                return (own, From(tokens, i + 1));
            // pflag's short forms, as docker takes them: `-it` is -i -t, `-eNAME=VALUE` is -e NAME=VALUE.
            if (t.Length > 2 && t[0] == '-' && t[1] != '-' && ExpandShortForms(command, t) is { } expanded)
            {
                own.AddRange(expanded);
                continue;
            }
            if (t.StartsWith('-') && t.Length > 1)
            {
                own.Add(t);
                string name = t.Split('=', 2)[0];
                Option? option = command.FindOption(name);
                // Not ours and not the payload's (that comes after the command or --): docker's answer.
                helpRequested |= name is "-h" or "--help" or "-?";
                if (option is null && name is not ("-h" or "--help" or "-?"))
                    throw new SandboxException(SandboxErrorCode.InvalidSpec, command.Name == "test"
                        ? $"unknown flag: {name} (dotnet test's own options go after --: sandbox test [PROJECT] -- {t})\nSee 'sandbox test --help'."
                        : $"unknown flag: {name} (put -- before a command that starts with -)\nSee 'sandbox {command.Name} --help'.");
                bool takesValue = option is not null && option.TakesValue && !t.Contains('=');
                if (takesValue && i + 1 < tokens.Count)
                    own.Add(tokens[++i]);
                continue;
            }
            // A word right before `--` is ours whatever it names (`sandbox run alpine -- sh`): a ROOT
            // that is not found is then said to be that, where it was run as the command and reported
            // "command not found" (127).
            if (positionals < maxPositionals && ((i + 1 < tokens.Count && tokens[i + 1] == "--") || isOwnPositional(t)))
            {
                positionals++;
                own.Add(t);
                if (stopAfterPositionals && positionals == maxPositionals)
                    return (own, From(tokens, i + 1 < tokens.Count && tokens[i + 1] == "--" ? i + 2 : i + 1));
                continue;
            }
            return (own, From(tokens, i));
        }
        return (own, ImmutableArray<string>.Empty);
    }

    /// <summary>
    /// `-xVALUE` when -x takes a value (`-eA=1`, `-w/src`), or a run of flags that take none (`-it`),
    /// as pflag reads them; null when <paramref name="token"/> is neither (the caller reports it).
    /// </summary>
    private static List<string>? ExpandShortForms(Command command, string token)
    {
        if (command.FindOption(token[..2]) is { } first && first.TakesValue)
            return [token[..2], token[2] == '=' ? token[3..] : token[2..]];
        var flags = new List<string>(token.Length - 1);
        for (int i = 1; i < token.Length; i++)
        {
            string flag = "-" + token[i];
            if (command.FindOption(flag) is not { TakesValue: false })
                return null;
            flags.Add(flag);
        }
        return flags;
    }

    private static bool IsZero(string duration) => duration.Trim() is "0" or "0s" or "0ms" or "0m" or "0h";

    /// <summary>sethostname(2) takes at most HOST_NAME_MAX (64) bytes: said here, not as EINVAL from the set-up.</summary>
    private static string CheckHostname(string hostname) =>
        hostname.Length > 0 && System.Text.Encoding.UTF8.GetByteCount(hostname) <= 64 ? hostname
            : throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--hostname {hostname}: a host name is 1 to 64 bytes (HOST_NAME_MAX)");

    // Loops, not LINQ, on the warm-start path (RootfsPlanner says why).
    private static ImmutableArray<T> Parsed<T>(string[]? values, Func<string, T> parse)
    {
        if (values is null || values.Length == 0)
            return [];
        var parsed = ImmutableArray.CreateBuilder<T>(values.Length);
        foreach (string v in values)
            parsed.Add(parse(v));
        return parsed.MoveToImmutable();
    }

    private static ImmutableArray<string> From(IReadOnlyList<string> tokens, int start)
    {
        var rest = ImmutableArray.CreateBuilder<string>(Math.Max(0, tokens.Count - start));
        for (int i = start; i < tokens.Count; i++)
            rest.Add(tokens[i]);
        return rest.MoveToImmutable();
    }
}

/// <summary>The image store option, the same for run, test and image.</summary>
internal static class StoreOption
{
    public static Option<string?> Create(bool recursive = false) => new("--root")
    {
        Description = "The image store (default: $SANDBOX_ROOT, else $XDG_DATA_HOME/sandbox, else ~/.local/share/sandbox)",
        HelpName = "DIR",
        Recursive = recursive,
    };
}

/// <summary><c>--storage-driver</c> (podman's name), for image roots; SANDBOX_STORAGE_DRIVER sets the default.</summary>
internal static class StorageDriverOption
{
    public const string EnvironmentVariable = "SANDBOX_STORAGE_DRIVER";

    public static Option<string?> Create() => new("--storage-driver")
    {
        Description = "How an image's layers become its root: overlay (kernel overlayfs in the user namespace), fuse-overlayfs, copy (slow), " +
            "or auto: overlay when it works here, else fuse-overlayfs, else copy, with a warning (default: $SANDBOX_STORAGE_DRIVER, else auto)",
        HelpName = "DRIVER",
    };

    public static StorageDriver Resolve(string? value) =>
        StorageDriverNames.Parse(value ?? Environment.GetEnvironmentVariable(EnvironmentVariable) ?? "auto");
}
