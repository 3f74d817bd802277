using System.Collections;
using System.Globalization;

namespace Sandbox.Cli.CommandLine;

// The command line's grammar, written here instead of taken from System.CommandLine: a warm
// `sandbox run` is a few milliseconds, and that package was the largest managed part of it. In perf
// and uprobes on the NativeAOT build, building `run`'s command, splitting and parsing took about
// 150 µs, and the start-up allocates the static fields of every type linked in (the executable's
// __GCSTATICS symbols: 2,163 with the package, 1,650 without). Without it a warm run of /bin/true on a directory root
// was 0.17 ms faster (paired, alternating, 600 rounds), and the executable 0.8 MB smaller. What is
// needed is small: docker's and pflag's conventions (--name VALUE, --name=VALUE, -n VALUE,
// repeatable options, -- ends the options), typed values, help and errors.

/// <summary>How many words an argument takes.</summary>
internal enum ArgumentArity
{
    ExactlyOne,
    ZeroOrOne,
    ZeroOrMore,
    OneOrMore,
}

/// <summary>An option: a flag (bool), one value (the last one given wins, as in docker), or values collected from each use (T[]).</summary>
internal abstract class Option
{
    private protected Option(string name, string[] aliases)
    {
        Name = name;
        Aliases = aliases;
    }

    public string Name { get; }

    /// <summary>Other names, e.g. "-v" for "--volume".</summary>
    public IReadOnlyList<string> Aliases { get; }

    public string? Description { get; init; }

    /// <summary>The value's name in help, e.g. SIZE.</summary>
    public string? HelpName { get; init; }

    /// <summary>Also accepted after the names of the command's subcommands.</summary>
    public bool Recursive { get; init; }

    /// <summary>False for a flag, which takes no value word.</summary>
    public abstract bool TakesValue { get; }

    internal bool HasName(string name)
    {
        if (Name == name)
            return true;
        foreach (string alias in Aliases)
        {
            if (alias == name)
                return true;
        }
        return false;
    }

    /// <summary>The value for the words given to this option, or null with <paramref name="error"/> set.</summary>
    internal abstract object? Convert(List<string> words, out string? error);

    /// <summary>The default shown in help, if the option has one worth showing.</summary>
    internal abstract string? DefaultForHelp();
}

internal sealed class Option<T> : Option
{
    public Option(string name, params string[] aliases) : base(name, aliases)
    {
        if (typeof(T) != typeof(bool) && typeof(T) != typeof(string) && typeof(T) != typeof(string[]) &&
            typeof(T) != typeof(long?) && typeof(T) != typeof(double?))
            throw new NotSupportedException($"{name}: options of type {typeof(T)} are not supported");
    }

    /// <summary>The value when the option is not given (an array option's is empty).</summary>
    public T? DefaultValue { get; init; }

    public override bool TakesValue => typeof(T) != typeof(bool);

    internal T? Default() => DefaultValue ?? (typeof(T) == typeof(string[]) ? (T)(object)Array.Empty<string>() : default);

    internal override object? Convert(List<string> words, out string? error)
    {
        error = null;
        if (typeof(T) == typeof(string[]))
            return words.ToArray();
        string word = words[^1];
        if (typeof(T) == typeof(string))
            return word;
        if (typeof(T) == typeof(bool))
        {
            if (bool.TryParse(word, out bool flag))
                return flag;
            error = $"{Name}={word}: expected true or false";
            return null;
        }
        if (typeof(T) == typeof(long?))
        {
            if (long.TryParse(word, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long whole))
                return whole;
            error = $"{Name} {word}: expected a whole number";
            return null;
        }
        if (double.TryParse(word, NumberStyles.Float, CultureInfo.InvariantCulture, out double number))
            return number;
        error = $"{Name} {word}: expected a number, e.g. 1.5";
        return null;
    }

    internal override string? DefaultForHelp() =>
        DefaultValue as string;
}

/// <summary>A positional argument.</summary>
internal abstract class Argument
{
    private protected Argument(string name) => Name = name;

    public string Name { get; }

    public string? Description { get; init; }

    public ArgumentArity Arity { get; init; }

    internal bool TakesMany => Arity is ArgumentArity.ZeroOrMore or ArgumentArity.OneOrMore;

    internal bool IsRequired => Arity is ArgumentArity.ExactlyOne or ArgumentArity.OneOrMore;

    internal abstract object Convert(List<string> words);
}

internal sealed class Argument<T> : Argument
{
    public Argument(string name) : base(name)
    {
        if (typeof(T) != typeof(string) && typeof(T) != typeof(string[]))
            throw new NotSupportedException($"{name}: arguments of type {typeof(T)} are not supported");
        Arity = typeof(T) == typeof(string[]) ? ArgumentArity.OneOrMore : ArgumentArity.ExactlyOne;
    }

    /// <summary>The value when the argument is not given: null, or an empty array.</summary>
    internal T? Default() => typeof(T) == typeof(string[]) ? (T)(object)Array.Empty<string>() : default;

    internal override object Convert(List<string> words) => typeof(T) == typeof(string[]) ? words.ToArray() : words[0];
}

/// <summary>A command: its options, its arguments or its subcommands, and what it does.</summary>
internal class Command : IEnumerable
{
    public Command(string name, string? description = null)
    {
        Name = name;
        Description = description;
    }

    public string Name { get; }

    public string? Description { get; }

    public List<string> Aliases { get; } = new();

    public List<Option> Options { get; } = new();

    public List<Argument> Arguments { get; } = new();

    public List<Command> Subcommands { get; } = new();

    internal Func<ParseResult, int>? Action { get; private set; }

    public void SetAction(Func<ParseResult, int> action) => Action = action;

    // Collection initialisers: new Command("ls", "...") { quiet, image }.
    public void Add(Option option) => Options.Add(option);

    public void Add(Argument argument) => Arguments.Add(argument);

    public void Add(Command command) => Subcommands.Add(command);

    IEnumerator IEnumerable.GetEnumerator() => Options.Concat<object>(Arguments).Concat(Subcommands).GetEnumerator();

    internal bool HasName(string name) => Name == name || Aliases.Contains(name);

    /// <summary>This command's own option named <paramref name="name"/> (or with that alias); null when it has none.</summary>
    public Option? FindOption(string name)
    {
        foreach (Option option in Options)
        {
            if (option.HasName(name))
                return option;
        }
        return null;
    }

    /// <summary>The subcommand named <paramref name="name"/> (or with that alias); null when there is none.</summary>
    public Command? FindSubcommand(string name)
    {
        foreach (Command subcommand in Subcommands)
        {
            if (subcommand.HasName(name))
                return subcommand;
        }
        return null;
    }

    /// <summary>Parses <paramref name="args"/> with this command as the first (its name not among them).</summary>
    public ParseResult Parse(IReadOnlyList<string> args) => Parser.Parse(this, args);
}

/// <summary>The program itself: <c>sandbox</c>, with --version.</summary>
internal sealed class RootCommand : Command
{
    public const string ProgramName = "sandbox";

    public RootCommand(string description) : base(ProgramName, description)
    {
    }
}
