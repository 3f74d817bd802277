using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Build.Framework;

namespace Sandbox.MSBuild;

/// <summary>What one output line turns into in the build log.</summary>
internal abstract record LogEntry;

/// <summary>A line shown as a message.</summary>
internal sealed record MessageEntry(MessageImportance Importance, string Text) : LogEntry;

/// <summary>An error or warning in MSBuild's canonical form: <c>file(line,col): error CODE: text</c>.</summary>
internal sealed record DiagnosticEntry(
    bool IsWarning,
    string? Subcategory,
    string? Code,
    string? File,
    int Line,
    int Column,
    int EndLine,
    int EndColumn,
    string Message) : LogEntry
{
    public string Key => $"{(IsWarning ? 'w' : 'e')}|{File}|{Line}|{Column}|{EndLine}|{EndColumn}|{Code}|{Message}";
}

/// <summary>
/// Recognises, in the lines a sandboxed command prints, what a build log should show as more than
/// text:
/// <list type="bullet">
/// <item>canonical errors and warnings (compilers, MSBuild, NuGet: <c>/src/A.cs(10,5): error CS1002: ; expected [/src/A.csproj]</c>)
///   → <see cref="DiagnosticEntry"/> (the trailing <c>[project]</c> that MSBuild appends is dropped);</item>
/// <item>failed tests as <c>dotnet test</c> prints them, VSTest's console logger
///   (<c>  Failed Name [12 ms]</c>, <c>  Error Message:</c>, <c>  Stack Trace:</c>, <c>     at M() in /src/T.cs:line 42</c>)
///   and Microsoft.Testing.Platform's (<c>failed Name (12ms)</c>, indented message and <c>at M() in /src/T.cs:42</c>)
///   → one error, code <see cref="TestErrorCode"/>, at the first stack frame with a source file (one
///   that exists on this machine when there is one: the workspace is at the same path inside and out),
///   its text on one line (test name and message), then the stack trace as a message of high importance;</item>
/// <item>test-run summaries (<c>Failed!  - Failed: 1, Passed: 1, ...</c>, <c>Test run summary:</c> and its counts)
///   → messages of high importance;</item>
/// <item>everything else → messages of normal importance (shown with <c>-v:n</c>, not at the default minimal verbosity).</item>
/// </list>
/// Lines of a failure block are kept at normal importance: their content is in the error.
/// </summary>
internal sealed partial class OutputRecognizer
{
    /// <summary>The code of a failed test: the same as the SDK's own VSTest task uses.</summary>
    public const string TestErrorCode = "TESTERROR";

    /// <summary>The error's text takes this many lines of the failure's message at most (the whole is in the output lines, at normal importance).</summary>
    public const int MaxMessageLines = 12;
    public const int MaxMessageLength = 1000;

    /// <summary>A failure's message is not collected beyond this many lines (a runaway block ends there).</summary>
    private const int MaxBlockLines = 500;

    // MSBuild's canonical format: ORIGIN[(LOCATION)] : [SUBCATEGORY] CATEGORY CODE : TEXT. Unlike MSBuild we
    // require an origin and a code (letters and digits, or an all-capital word such as TESTERROR): a test that
    // prints "error: something" is not a build error.
    // A parenthesis is allowed in an absolute path ("/src/App (copy)/A.cs(10,5)"), not in other origins,
    // so that a line of code such as "Assert.That(error, Is.Null): error CS1: x" is no diagnostic; the
    // path may not end in one that is no location ("/src/A.cs(abc)").
    [GeneratedRegex(@"^\s*(?:\d+>)?(?<origin>/[^:]*?[^:)\s]|[^\s:(/][^:(]*?|[A-Za-z]:[^:(]*?)(?:\((?<loc>[0-9,\-]+)\))?\s*:\s*(?:(?<sub>[^:]*?)\s+)?(?<cat>error|warning)\s+(?<code>[A-Za-z]+\d[A-Za-z0-9.]*|[A-Z]{2,}[A-Z0-9]*)\s*:\s*(?<text>.*)$")]
    private static partial Regex Canonical();

    [GeneratedRegex(@"\s+\[[^\[\]]*?\.(?:\w*proj|sln|slnx)(?:::[^\]]*)?\]\s*$")]
    private static partial Regex ProjectSuffix();

    [GeneratedRegex(@"^\s*Failed (?<name>.+?) \[(?<duration>[^\]]*)\]\s*$")]
    private static partial Regex VsTestFailed();

    [GeneratedRegex(@"^\s*(?:Passed|Skipped|Failed) .+ \[[^\]]*\]\s*$")]
    private static partial Regex VsTestResult();

    [GeneratedRegex(@"^\s*(?<section>Error Message|Stack Trace|Standard Output Messages|Standard Error Messages|Additional Information Messages|Debug Trace Messages|TestContext Messages):\s*$")]
    private static partial Regex VsTestSection();

    [GeneratedRegex(@"^\s*failed (?<name>.+?) \((?<duration>[^)]*)\)\s*$")]
    private static partial Regex PlatformFailed();

    [GeneratedRegex(@"^\s+from \S.*\(.*\)\s*$")]
    private static partial Regex PlatformFrom();

    [GeneratedRegex(@"^\s*at (?<method>.+?) in (?<file>.+?):(?:line )?(?<line>\d+)\s*$")]
    private static partial Regex StackFrame();

    [GeneratedRegex(@"^\s*(?:Passed|Failed|Skipped)!\s+-\s+Failed:\s+\d+")]
    private static partial Regex VsTestSummary();

    [GeneratedRegex(@"^\s*Test run summary:")]
    private static partial Regex PlatformSummary();

    [GeneratedRegex(@"^\s*(?:total|failed|succeeded|skipped|duration):\s+\S")]
    private static partial Regex PlatformSummaryCount();

    [GeneratedRegex(@"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")]
    private static partial Regex AnsiEscape();

    private enum Section { None, Header, Message, Stack, Other }

    private sealed class PendingFailure(string name, bool platform, int indent = 0)
    {
        public string Name { get; } = name;
        public bool Platform { get; } = platform;
        /// <summary>The header's indentation: VSTest's next result line comes at the same one.</summary>
        public int Indent { get; } = indent;
        public Section Section { get; set; } = Section.Header;
        public List<string> Message { get; } = [];
        public List<string> Stack { get; } = [];
    }

    private readonly Func<string, bool> _fileExists;
    private PendingFailure? _failure;
    private bool _inPlatformSummary;

    /// <summary>
    /// The tests are running (VSTest's "Test run for …", the testing platform's "Running tests from
    /// …"): from then on, a line that reads like a compiler's diagnostic is a test's output (an
    /// analyzer test printing what it checks, a test that builds a fixture), not the build's, and a
    /// message. As an error it failed builds whose tests all passed.
    /// </summary>
    private bool _testing;

    public OutputRecognizer(Func<string, bool>? fileExists = null)
    {
        _fileExists = fileExists ?? File.Exists;
    }

    public static string StripAnsi(string line) => line.Contains('\x1b') ? AnsiEscape().Replace(line, "") : line;

    /// <summary>Feeds one line (without its newline); appends what to log, in order.</summary>
    public void Feed(string rawLine, List<LogEntry> entries)
    {
        string line = StripAnsi(rawLine).TrimEnd('\r');

        if (_failure is not null && ContinuesFailure(_failure, line, entries))
        {
            entries.Add(new MessageEntry(MessageImportance.Normal, line));
            return;
        }

        if (VsTestFailed().Match(line) is { Success: true } vs)
        {
            _failure = new PendingFailure(vs.Groups["name"].Value, platform: false, Indentation(line));
            entries.Add(new MessageEntry(MessageImportance.Normal, line));
            return;
        }
        if (PlatformFailed().Match(line) is { Success: true } mtp)
        {
            _failure = new PendingFailure(mtp.Groups["name"].Value, platform: true);
            entries.Add(new MessageEntry(MessageImportance.Normal, line));
            return;
        }

        if (VsTestSummary().IsMatch(line))
        {
            entries.Add(new MessageEntry(MessageImportance.High, line));
            return;
        }
        if (PlatformSummary().IsMatch(line))
        {
            _inPlatformSummary = true;
            entries.Add(new MessageEntry(MessageImportance.High, line));
            return;
        }
        if (_inPlatformSummary)
        {
            if (PlatformSummaryCount().IsMatch(line))
            {
                entries.Add(new MessageEntry(MessageImportance.High, line));
                return;
            }
            if (line.Trim().Length > 0)
                _inPlatformSummary = false;
        }

        string trimmed = line.TrimStart();
        if (trimmed.StartsWith("Test run for ", StringComparison.Ordinal) || trimmed.StartsWith("Running tests from ", StringComparison.Ordinal))
            _testing = true;
        if (!_testing && ParseCanonical(line) is DiagnosticEntry diagnostic)
        {
            entries.Add(diagnostic);
            return;
        }
        entries.Add(new MessageEntry(MessageImportance.Normal, line));
    }

    /// <summary>The end of the output (or of one command's output): completes a failure still open.</summary>
    public void Flush(List<LogEntry> entries)
    {
        EmitFailure(entries);
        _inPlatformSummary = false;
        _testing = false;
    }

    /// <summary>
    /// Whether <paramref name="line"/> belongs to the open failure block (collected); when it ends
    /// the block instead, the failure is emitted and false returned so that the line is looked at afresh.
    /// </summary>
    private bool ContinuesFailure(PendingFailure failure, string line, List<LogEntry> entries)
    {
        bool blank = line.Trim().Length == 0;
        // A message may read like a result line ("Failed to connect [ECONNREFUSED]", "failed to parse
        // (line 3)"). VSTest indents its message deeper than its result lines, so only a line at the
        // header's indentation is the next result. The testing platform writes messages unindented:
        // its next result is a line at column 0 after the block's "from" line (below).
        if (VsTestSummary().IsMatch(line) || PlatformSummary().IsMatch(line)
            || (!failure.Platform && Indentation(line) == failure.Indent && VsTestResult().IsMatch(line)))
        {
            EmitFailure(entries);
            return false;
        }

        if (!failure.Platform)
        {
            if (VsTestSection().Match(line) is { Success: true } section)
            {
                failure.Section = section.Groups["section"].Value switch
                {
                    "Error Message" => Section.Message,
                    "Stack Trace" => Section.Stack,
                    _ => Section.Other,
                };
                if (failure.Section == Section.Other)
                    EmitFailure(entries);
                return true;
            }
            switch (failure.Section)
            {
                case Section.Message:
                    if (failure.Message.Count < MaxBlockLines)
                        failure.Message.Add(line);
                    return true;
                case Section.Stack when blank:
                    EmitFailure(entries);
                    return true;
                case Section.Stack:
                    if (failure.Stack.Count < MaxBlockLines)
                        failure.Stack.Add(line);
                    return true;
                case Section.Header when blank:
                    return true;
                default:
                    // Something else after "Failed X [..]" without the usual sections.
                    EmitFailure(entries);
                    return false;
            }
        }

        // Microsoft.Testing.Platform prints the message right after the header (its later lines
        // unindented, as the framework wrote them), then "  from <assembly> (<tfm>|<arch>)", the message
        // again, indented, and the stack frames ("at M() in /src/T.cs:42"). After the "from" line
        // everything of the block is indented.
        bool frame = StackFrame().IsMatch(line);
        bool atColumnZero = !blank && !char.IsWhiteSpace(line[0]);
        switch (failure.Section)
        {
            case Section.Header:
            case Section.Message:
                if (frame)
                {
                    failure.Section = Section.Stack;
                    failure.Stack.Add(line);
                }
                else if (PlatformFrom().IsMatch(line))
                {
                    failure.Section = Section.Other;
                }
                else if (failure.Message.Count >= MaxBlockLines)
                {
                    EmitFailure(entries);
                    return false;
                }
                else
                {
                    failure.Message.Add(line);
                }
                return true;
            case Section.Stack when blank:
                EmitFailure(entries);
                return true;
            case Section.Stack or Section.Other when atColumnZero:
                EmitFailure(entries);
                return false;
            case Section.Stack:
                if (failure.Stack.Count < MaxBlockLines)
                    failure.Stack.Add(line);
                return true;
            default:
                if (frame)
                {
                    failure.Section = Section.Stack;
                    failure.Stack.Add(line);
                }
                return true;
        }
    }

    private static int Indentation(string line) => line.Length - line.TrimStart().Length;

    private void EmitFailure(List<LogEntry> entries)
    {
        if (_failure is not PendingFailure failure)
            return;
        _failure = null;

        string? file = null;
        int lineNumber = 0;
        string? fallbackFile = null;
        int fallbackLine = 0;
        foreach (string frame in failure.Stack)
        {
            if (StackFrame().Match(frame) is not { Success: true } m)
                continue;
            string candidate = m.Groups["file"].Value;
            int number = int.Parse(m.Groups["line"].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (_fileExists(candidate))
            {
                file = candidate;
                lineNumber = number;
                break;
            }
            // Deterministic source paths (/_/src/...) of a library's own frames are nowhere on this machine.
            if (fallbackFile is null && !candidate.StartsWith("/_/", StringComparison.Ordinal))
            {
                fallbackFile = candidate;
                fallbackLine = number;
            }
        }
        if (file is null && fallbackFile is not null)
        {
            file = fallbackFile;
            lineNumber = fallbackLine;
        }

        // One line: CI annotations (GitHub's problem matchers, Azure's ##vso) take one line per error.
        var text = new StringBuilder();
        text.Append(failure.Name).Append(" failed");
        string separator = ": ";
        foreach (string l in failure.Message.Select(l => l.Trim()).Where(l => l.Length > 0).Take(MaxMessageLines))
        {
            text.Append(separator).Append(l);
            separator = " ";
        }
        bool truncated = failure.Message.Count(l => l.Trim().Length > 0) > MaxMessageLines;
        if (text.Length > MaxMessageLength)
        {
            text.Length = MaxMessageLength - 1;
            truncated = true;
        }
        if (truncated)
            text.Append('…');
        entries.Add(new DiagnosticEntry(false, null, TestErrorCode, file, lineNumber, 0, 0, 0, text.ToString()));

        // The stack trace, where the default (minimal) verbosity shows it, but not as part of the error.
        List<string> stack = Dedent(failure.Stack);
        if (stack.Count > 0)
            entries.Add(new MessageEntry(MessageImportance.High, "  Stack Trace:\n" + string.Join("\n", stack.Select(l => "    " + l))));
    }

    /// <summary>Removes the indentation common to all non-blank lines, and leading and trailing blank lines.</summary>
    private static List<string> Dedent(List<string> lines)
    {
        int start = lines.FindIndex(l => l.Trim().Length > 0);
        if (start < 0)
            return [];
        int end = lines.FindLastIndex(l => l.Trim().Length > 0);
        var kept = lines.GetRange(start, end - start + 1);
        int indent = kept.Where(l => l.Trim().Length > 0).Min(l => l.Length - l.TrimStart().Length);
        return kept.Select(l => l.Trim().Length == 0 ? "" : l[indent..].TrimEnd()).ToList();
    }

    /// <summary>Parses <c>origin(line,col): [subcategory] error|warning CODE: text</c>; null when the line is not one.</summary>
    internal static DiagnosticEntry? ParseCanonical(string line)
    {
        if (!line.Contains("error", StringComparison.Ordinal) && !line.Contains("warning", StringComparison.Ordinal))
            return null;
        line = ProjectSuffix().Replace(line, "");
        Match m = Canonical().Match(line);
        if (!m.Success)
            return null;
        string origin = m.Groups["origin"].Value.Trim();
        if (origin.Length == 0)
            return null;
        int l = 0, c = 0, el = 0, ec = 0;
        if (m.Groups["loc"].Success && !ParseLocation(m.Groups["loc"].Value, out l, out c, out el, out ec))
            return null;
        string? sub = m.Groups["sub"].Success && m.Groups["sub"].Value.Trim().Length > 0 ? m.Groups["sub"].Value.Trim() : null;
        return new DiagnosticEntry(
            IsWarning: m.Groups["cat"].Value == "warning",
            Subcategory: sub,
            Code: m.Groups["code"].Value,
            File: origin,
            Line: l,
            Column: c,
            EndLine: el,
            EndColumn: ec,
            Message: m.Groups["text"].Value.Trim());
    }

    /// <summary>MSBuild's location forms: (l), (l-el), (l,c), (l,c-ec), (l,c,el,ec).</summary>
    private static bool ParseLocation(string location, out int line, out int column, out int endLine, out int endColumn)
    {
        line = column = endLine = endColumn = 0;
        static bool Int(string s, out int v) => int.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out v);
        string[] parts = location.Split(',');
        switch (parts.Length)
        {
            case 1:
            {
                string[] range = parts[0].Split('-');
                if (range.Length > 2 || !Int(range[0], out line))
                    return false;
                return range.Length == 1 || Int(range[1], out endLine);
            }
            case 2:
            {
                if (!Int(parts[0], out line))
                    return false;
                string[] range = parts[1].Split('-');
                if (range.Length > 2 || !Int(range[0], out column))
                    return false;
                return range.Length == 1 || Int(range[1], out endColumn);
            }
            case 4:
                return Int(parts[0], out line) && Int(parts[1], out column) && Int(parts[2], out endLine) && Int(parts[3], out endColumn);
            default:
                return false;
        }
    }
}
