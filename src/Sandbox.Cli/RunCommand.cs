using System.Collections.Immutable;
using System.CommandLine;

namespace Sandbox.Cli;

/// <summary><c>sandbox run [OPTIONS] [ROOT] [--] COMMAND [ARG...]</c>, docker-like.</summary>
internal sealed class RunCommand : Command
{
    private readonly SandboxOptions _options = new();
    private readonly Option<string?> _workdir = new("--workdir", "-w")
    {
        Description = "Working directory inside the sandbox (default /)",
        HelpName = "DIR",
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
        foreach (Option option in _options.All)
            Options.Add(option);
        Options.Add(_workdir);
        Arguments.Add(_root);
        Arguments.Add(_command);
    }

    /// <summary>
    /// Splits <c>run</c>'s tokens into sandbox options, an optional ROOT, and the payload's command.
    /// A first word that is "host" or an existing directory is the ROOT.
    /// </summary>
    public (List<string> OwnTokens, ImmutableArray<string> PayloadCommand) Split(IReadOnlyList<string> tokens) =>
        SandboxOptions.Split(this, tokens, t => t == "host" || Directory.Exists(t), maxPositionals: 1);

    public SandboxSpec BuildSpec(ParseResult parse, ImmutableArray<string> command)
    {
        string? root = parse.GetValue(_root);
        RootSpec rootSpec = root is null or "host" ? RootSpec.Host : RootSpec.Directory(root);
        return _options.Apply(parse, new SandboxSpec(command) { Root = rootSpec, WorkingDirectory = parse.GetValue(_workdir) });
    }

    public bool Stats(ParseResult parse) => _options.Stats(parse);

    public string EventsFormat(ParseResult parse) => _options.EventsFormat(parse);
}
