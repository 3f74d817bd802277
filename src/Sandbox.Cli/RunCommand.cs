using System.Collections.Immutable;
using System.CommandLine;
using Sandbox.Cgroups;

namespace Sandbox.Cli;

/// <summary><c>sandbox run [OPTIONS] [ROOT] [--] COMMAND [ARG...]</c>, docker-like.</summary>
internal sealed class RunCommand : Command
{
    private readonly Option<string[]> _volumes = new("--volume", "-v")
    {
        Description = "Bind a host path: HOST:CONTAINER[:ro|rw] (repeatable)",
        HelpName = "HOST:CONTAINER[:ro]",
        Arity = ArgumentArity.ZeroOrMore,
    };
    private readonly Option<string[]> _tmpfs = new("--tmpfs")
    {
        Description = "Mount a fresh tmpfs at PATH (repeatable)",
        HelpName = "PATH",
        Arity = ArgumentArity.ZeroOrMore,
    };
    private readonly Option<string?> _workdir = new("--workdir", "-w")
    {
        Description = "Working directory inside the sandbox (default /)",
        HelpName = "DIR",
    };
    private readonly Option<string[]> _env = new("--env", "-e")
    {
        Description = "Set NAME=VALUE inside, or pass the host's NAME through (repeatable). Nothing else of the host's environment gets in",
        HelpName = "NAME[=VALUE]",
        Arity = ArgumentArity.ZeroOrMore,
    };
    private readonly Option<string> _hostname = new("--hostname")
    {
        Description = "Hostname inside the sandbox",
        DefaultValueFactory = _ => "sandbox",
    };
    private readonly Option<string> _network = new("--network")
    {
        Description = "none: a private network with loopback up (default); host: the host's network",
        DefaultValueFactory = _ => "none",
    };
    private readonly Option<string> _userns = new("--userns")
    {
        Description = "Id mapping: auto (a subuid range when available), single (0 -> you), subuid",
        DefaultValueFactory = _ => "auto",
    };
    private readonly Option<string?> _timeout = new("--timeout")
    {
        Description = "Kill the whole sandbox after DURATION (e.g. 30s, 5m, 1h) and exit 124",
        HelpName = "DURATION",
    };
    private readonly Option<bool> _interactive = new("--interactive", "-i")
    {
        Description = "Forward stdin even when it is a terminal (a pipe or file is always forwarded)",
    };
    private readonly Option<string> _events = new("--events")
    {
        Description = "Output format: console (the payload's bytes, unchanged) or json (JSON lines of events)",
        DefaultValueFactory = _ => "console",
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
        Description = "Maximum number of processes and threads (cgroup pids.max)",
        HelpName = "N",
    };
    private readonly Option<double?> _cpus = new("--cpus")
    {
        Description = "CPU time, in CPUs, e.g. 1.5 (cgroup cpu.max)",
        HelpName = "N",
    };
    private readonly Option<string[]> _deviceReadBps = new("--device-read-bps")
    {
        Description = "Read rate limit for a block device, e.g. /dev/sda:10mb (cgroup io.max)",
        HelpName = "DEVICE:RATE",
        Arity = ArgumentArity.ZeroOrMore,
    };
    private readonly Option<string[]> _deviceWriteBps = new("--device-write-bps")
    {
        Description = "Write rate limit for a block device, e.g. /dev/sda:10mb (cgroup io.max)",
        HelpName = "DEVICE:RATE",
        Arity = ArgumentArity.ZeroOrMore,
    };
    private readonly Option<string> _limits = new("--limits")
    {
        Description = "required (default): exit 125 when limits cannot be enforced; best-effort: run without them, with a warning",
        DefaultValueFactory = _ => "required",
    };
    private readonly Option<bool> _stats = new("--stats")
    {
        Description = "Print wall time, CPU time and peak memory on stderr at the end",
    };
    private readonly Argument<string?> _root = new("ROOT")
    {
        Description = "host (default) or a directory holding a root filesystem",
        Arity = ArgumentArity.ZeroOrOne,
    };
    private readonly Argument<string[]> _command = new("COMMAND")
    {
        Description = "The command and its arguments (put -- before it when it starts with -)",
        Arity = ArgumentArity.ZeroOrMore,
    };

    public RunCommand() : base("run", "Run a command in a new sandbox")
    {
        Options.Add(_volumes);
        Options.Add(_tmpfs);
        Options.Add(_workdir);
        Options.Add(_env);
        Options.Add(_hostname);
        Options.Add(_network);
        Options.Add(_userns);
        Options.Add(_timeout);
        Options.Add(_interactive);
        Options.Add(_events);
        Options.Add(_memory);
        Options.Add(_memorySwap);
        Options.Add(_pidsLimit);
        Options.Add(_cpus);
        Options.Add(_deviceReadBps);
        Options.Add(_deviceWriteBps);
        Options.Add(_limits);
        Options.Add(_stats);
        Arguments.Add(_root);
        Arguments.Add(_command);
    }

    /// <summary>
    /// Splits <c>run</c>'s tokens into sandbox options, an optional ROOT, and the payload's command:
    /// as with docker, option parsing stops at the first word that is not an option (or at --), so
    /// the command's own flags are never taken for ours. A first word that is "host" or an existing
    /// directory is the ROOT.
    /// </summary>
    public (List<string> OwnTokens, ImmutableArray<string> PayloadCommand) Split(IReadOnlyList<string> tokens)
    {
        var own = new List<string>();
        bool haveRoot = false;
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i];
            if (t == "--")
                return (own, tokens.Skip(i + 1).ToImmutableArray());
            if (t.StartsWith('-') && t.Length > 1)
            {
                own.Add(t);
                string name = t.Split('=', 2)[0];
                Option? option = Options.FirstOrDefault(o => o.Name == name || o.Aliases.Contains(name));
                bool takesValue = option is not null && option.ValueType != typeof(bool) && !t.Contains('=');
                if (takesValue && i + 1 < tokens.Count)
                    own.Add(tokens[++i]);
                continue;
            }
            if (!haveRoot && (t == "host" || Directory.Exists(t)))
            {
                haveRoot = true;
                own.Add(t);
                continue;
            }
            return (own, tokens.Skip(i).ToImmutableArray());
        }
        return (own, ImmutableArray<string>.Empty);
    }

    public SandboxSpec BuildSpec(ParseResult parse, ImmutableArray<string> command)
    {
        string? root = parse.GetValue(_root);
        RootSpec rootSpec = root is null or "host" ? RootSpec.Host : RootSpec.Directory(root);
        var spec = new SandboxSpec(command)
        {
            Root = rootSpec,
            WorkingDirectory = parse.GetValue(_workdir),
            Hostname = parse.GetValue(_hostname) ?? "sandbox",
            Network = parse.GetValue(_network) switch
            {
                "none" => NetworkMode.None,
                "host" => NetworkMode.Host,
                var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--network {other}: expected none or host"),
            },
            UserNamespace = parse.GetValue(_userns) switch
            {
                "auto" => UserNamespaceMode.Auto,
                "single" => UserNamespaceMode.Single,
                "subuid" => UserNamespaceMode.Subuid,
                var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--userns {other}: expected auto, single or subuid"),
            },
            Timeout = parse.GetValue(_timeout) is string t ? DurationParser.Parse(t, "--timeout") : null,
            TmpfsMounts = (parse.GetValue(_tmpfs) ?? []).ToImmutableArray(),
            Binds = (parse.GetValue(_volumes) ?? []).Select(BindMount.Parse).ToImmutableArray(),
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
                PidsLimit = parse.GetValue(_pidsLimit),
                Cpus = parse.GetValue(_cpus),
                DeviceReadBps = (parse.GetValue(_deviceReadBps) ?? []).Select(v => DeviceRate.Parse(v, "--device-read-bps")).ToImmutableArray(),
                DeviceWriteBps = (parse.GetValue(_deviceWriteBps) ?? []).Select(v => DeviceRate.Parse(v, "--device-write-bps")).ToImmutableArray(),
            },
            LimitsPolicy = parse.GetValue(_limits) switch
            {
                "required" => LimitsPolicy.Required,
                "best-effort" => LimitsPolicy.BestEffort,
                var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--limits {other}: expected required or best-effort"),
            },
        };
        spec.Limits.Validate();
        foreach (string e in parse.GetValue(_env) ?? [])
        {
            int eq = e.IndexOf('=');
            if (eq == 0)
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"-e {e}: missing the variable's name");
            if (eq > 0)
                spec = spec.WithEnvironment(e[..eq], e[(eq + 1)..]);
            else if (Environment.GetEnvironmentVariable(e) is string value)
                spec = spec.WithEnvironment(e, value); // docker: -e NAME passes the host's value, if set
        }
        return spec;
    }

    public bool Stats(ParseResult parse) => parse.GetValue(_stats);

    public string EventsFormat(ParseResult parse) => parse.GetValue(_events) switch
    {
        "console" => "console",
        "json" => "json",
        var other => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--events {other}: expected console or json"),
    };
}
