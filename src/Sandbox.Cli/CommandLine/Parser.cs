using System.Reflection;
using System.Text;

namespace Sandbox.Cli.CommandLine;

/// <summary>What a command line says: the command chosen, its options' and arguments' values, and what is wrong with it.</summary>
internal sealed class ParseResult(IReadOnlyList<Command> path, Dictionary<Option, object?> options, Dictionary<Argument, object> arguments,
    List<string> errors, bool helpRequested, bool versionRequested)
{
    /// <summary>The command the words chose (the last subcommand named).</summary>
    public Command Command => Path[^1];

    /// <summary>Empty when the line is good, or when it asks for help (help wins, as everywhere).</summary>
    public IReadOnlyList<string> Errors { get; } = errors;

    public bool HelpRequested { get; } = helpRequested;

    public bool VersionRequested { get; } = versionRequested;

    /// <summary>The commands from the first parsed to <see cref="Command"/>.</summary>
    internal IReadOnlyList<Command> Path { get; } = path;

    /// <summary>How a user types the command: "sandbox image import".</summary>
    public string CommandPath => Parser.PathText(Path);

    public T? GetValue<T>(Option<T> option) => options.TryGetValue(option, out object? value) ? (T?)value : option.Default();

    public T? GetValue<T>(Argument<T> argument) => arguments.TryGetValue(argument, out object? value) ? (T)value : argument.Default();

    /// <summary>
    /// Does what the line asks: help (stdout, 0), the version, the errors (stderr, docker's 125 for a bad
    /// command line), or the command's action. A command that only groups others shows its help, as docker's do.
    /// </summary>
    public int Invoke()
    {
        if (HelpRequested)
        {
            Console.Out.Write(HelpText.Render(this));
            return 0;
        }
        if (VersionRequested)
        {
            Console.Out.WriteLine(Version());
            return 0;
        }
        if (Errors.Count > 0)
        {
            var text = new StringBuilder();
            foreach (string error in Errors)
                text.Append(RootCommand.ProgramName).Append(": ").Append(error).Append('\n');
            text.Append("See '").Append(CommandPath).Append(" --help'.\n");
            Console.Error.Write(text.ToString());
            return ExitCodes.SandboxFailed;
        }
        if (Command.Action is null)
        {
            Console.Out.Write(HelpText.Render(this));
            return 0;
        }
        return Command.Action(this);
    }

    private static string Version() =>
        typeof(ParseResult).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(ParseResult).Assembly.GetName().Version?.ToString() ?? "unknown";
}

/// <summary>
/// docker's and pflag's conventions: --name VALUE, --name=VALUE, -n VALUE; a flag takes no value
/// word (--flag=false turns it off); a value word is taken as it is, even when it starts with '-'
/// (--memory-swap -1); "--" ends the options; -h, --help and -? ask for help anywhere before "--".
/// </summary>
internal static class Parser
{
    public static ParseResult Parse(Command start, IReadOnlyList<string> args)
    {
        var path = new List<Command> { start };
        var optionWords = new Dictionary<Option, List<string>>();
        var positionals = new List<string>();
        var errors = new List<string>();
        bool help = false, version = false;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            Command command = path[^1];
            if (arg == "--")
            {
                for (i++; i < args.Count; i++)
                    positionals.Add(args[i]);
                break;
            }
            if (arg is "-h" or "--help" or "-?")
            {
                help = true;
                continue;
            }
            if (arg == "--version" && command is RootCommand)
            {
                version = true;
                continue;
            }
            if (arg.Length > 1 && arg[0] == '-')
            {
                int equals = arg.IndexOf('=');
                string name = equals < 0 ? arg : arg[..equals];
                Option? option = Find(path, name);
                if (option is null)
                {
                    errors.Add($"unknown flag: {name}");
                    continue;
                }
                string value;
                if (equals >= 0)
                    value = arg[(equals + 1)..];
                else if (!option.TakesValue)
                    value = "true";
                else if (i + 1 < args.Count)
                    value = args[++i];
                else
                {
                    errors.Add($"flag needs an argument: {name}");
                    continue;
                }
                if (!optionWords.TryGetValue(option, out List<string>? words))
                    optionWords[option] = words = new List<string>(1);
                words.Add(value);
                continue;
            }
            if (positionals.Count == 0 && command.Subcommands.Count > 0)
            {
                Command? subcommand = command.FindSubcommand(arg);
                if (subcommand is null)
                    errors.Add($"'{arg}' is not a command of '{PathText(path)}'");
                else
                    path.Add(subcommand);
                continue;
            }
            positionals.Add(arg);
        }

        var options = new Dictionary<Option, object?>(optionWords.Count);
        foreach (var (option, words) in optionWords)
        {
            object? value = option.Convert(words, out string? error);
            if (error is not null)
                errors.Add(error);
            else
                options[option] = value;
        }
        var arguments = new Dictionary<Argument, object>();
        AssignArguments(path[^1], positionals, arguments, errors);
        if (help)
            errors.Clear();
        return new ParseResult(path, options, arguments, errors, help, version);
    }

    private static void AssignArguments(Command command, List<string> positionals, Dictionary<Argument, object> arguments, List<string> errors)
    {
        int next = 0;
        foreach (Argument argument in command.Arguments)
        {
            int available = positionals.Count - next;
            if (available == 0)
            {
                if (argument.IsRequired)
                    errors.Add($"'{command.Name}' needs {argument.Name}");
                continue;
            }
            int taken = argument.TakesMany ? available : 1;
            arguments[argument] = argument.Convert(positionals.GetRange(next, taken));
            next += taken;
        }
        if (next < positionals.Count)
            errors.Add($"'{command.Name}' takes no argument '{positionals[next]}' here");
    }

    /// <summary>How a user types the commands of <paramref name="path"/>: "sandbox image import".</summary>
    internal static string PathText(IReadOnlyList<Command> path)
    {
        var words = new StringBuilder(RootCommand.ProgramName);
        foreach (Command command in path)
        {
            if (command is not RootCommand)
                words.Append(' ').Append(command.Name);
        }
        return words.ToString();
    }

    /// <summary>The command's own options first, then the recursive options of the commands above it.</summary>
    private static Option? Find(List<Command> path, string name)
    {
        if (path[^1].FindOption(name) is Option own)
            return own;
        for (int level = path.Count - 2; level >= 0; level--)
        {
            if (path[level].FindOption(name) is { Recursive: true } inherited)
                return inherited;
        }
        return null;
    }
}
