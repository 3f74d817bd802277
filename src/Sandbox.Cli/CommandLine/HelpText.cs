using System.Text;

namespace Sandbox.Cli.CommandLine;

/// <summary>A command's help, laid out as docker's: usage, description, then two-column lists.</summary>
internal static class HelpText
{
    public static string Render(ParseResult parse)
    {
        Command command = parse.Command;
        var text = new StringBuilder();
        text.Append("Usage: ").Append(parse.CommandPath).Append(" [OPTIONS]");
        if (command.Subcommands.Count > 0)
            text.Append(" COMMAND");
        foreach (Argument argument in command.Arguments)
            text.Append(' ').Append(Usage(argument));
        text.Append("\n\n");
        if (command.Description is not null)
            text.Append(command.Description).Append("\n\n");

        if (command.Arguments.Count > 0)
        {
            var rows = new List<(string, string)>();
            foreach (Argument argument in command.Arguments)
                rows.Add((argument.Name, argument.Description ?? ""));
            Section(text, "Arguments", rows);
        }
        if (command.Subcommands.Count > 0)
        {
            var rows = new List<(string, string)>();
            foreach (Command subcommand in command.Subcommands)
                rows.Add((string.Join(", ", [subcommand.Name, .. subcommand.Aliases]), subcommand.Description ?? ""));
            Section(text, "Commands", rows);
        }
        var options = new List<(string, string)>();
        IReadOnlyList<Command> path = parse.Path;
        for (int level = path.Count - 1; level >= 0; level--)
        {
            foreach (Option option in path[level].Options)
            {
                if (level == path.Count - 1 || option.Recursive)
                    options.Add((Names(option), Description(option)));
            }
        }
        options.Add(("-h, --help", "Show this help"));
        if (command is RootCommand)
            options.Add(("--version", "Show the version"));
        Section(text, "Options", options);
        if (command.Subcommands.Count > 0)
            text.Append("Run '").Append(parse.CommandPath).Append(" COMMAND --help' for a command's options.\n");
        return text.ToString();
    }

    private static string Usage(Argument argument) => argument.Arity switch
    {
        ArgumentArity.ExactlyOne => argument.Name,
        ArgumentArity.ZeroOrOne => $"[{argument.Name}]",
        ArgumentArity.OneOrMore => $"{argument.Name}...",
        _ => $"[{argument.Name}...]",
    };

    private static string Names(Option option)
    {
        var names = new StringBuilder();
        // Short names first, as in "-v, --volume".
        foreach (string alias in option.Aliases)
            names.Append(alias).Append(", ");
        names.Append(option.Name);
        if (option.TakesValue)
            names.Append(' ').Append(option.HelpName ?? option.Name.TrimStart('-').ToUpperInvariant());
        return names.ToString();
    }

    private static string Description(Option option) =>
        option.DefaultForHelp() is string value ? $"{option.Description} [default: {value}]" : option.Description ?? "";

    private static void Section(StringBuilder text, string title, List<(string Left, string Right)> rows)
    {
        text.Append(title).Append(":\n");
        int width = 0;
        foreach (var (left, _) in rows)
            width = Math.Max(width, left.Length);
        foreach (var (left, right) in rows)
            text.Append("  ").Append(left.PadRight(width)).Append("  ").Append(right).Append('\n');
        text.Append('\n');
    }
}
