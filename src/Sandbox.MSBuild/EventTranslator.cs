using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

namespace Sandbox.MSBuild;

/// <summary>
/// Turns the CLI's JSON lines (<c>sandbox … --events json</c>) into build log entries, as they come:
/// <list type="table">
/// <item><term>note</term><description>a message (normal importance), prefixed <c>sandbox: </c></description></item>
/// <item><term>started</term><description>a message (low)</description></item>
/// <item><term>output</term><description>reassembled into lines per stream, then <see cref="OutputRecognizer"/>: canonical errors and
///   warnings, failed tests (<c>TESTERROR</c>), summaries (high), other lines (normal)</description></item>
/// <item><term>exited</term><description>a message (normal) with exit code, wall time and peak memory; a timeout is error
///   <see cref="TimeoutCode"/>, an OOM kill error <see cref="OutOfMemoryCode"/>, a pids limit hit warning <see cref="PidsLimitCode"/></description></item>
/// <item><term>error</term><description>an error with the event's own code (<c>SBX001</c>…<c>SBX099</c>: the sandbox could not run the command)</description></item>
/// <item><term>summary</term><description>a message of high importance (<c>sandbox test: 1 passed, 1 failed, 0 skipped in 8.3s</c>) and the counts</description></item>
/// </list>
/// At the end (<see cref="Complete"/>), a non-zero exit that nothing logged so far explains becomes
/// error <see cref="CommandFailedCode"/>, with the last lines of output. Errors and warnings are
/// reported once each (MSBuild repeats a build's errors in its closing summary). Thread-safe: the
/// CLI's stdout and stderr are read concurrently.
/// </summary>
internal sealed class EventTranslator
{
    /// <summary>The CLI could not be started (CliPath wrong, no dotnet).</summary>
    public const string CliNotStartedCode = "SBX100";
    /// <summary>The command exited non-zero, or was killed, and printed no error that was recognised.</summary>
    public const string CommandFailedCode = "SBX101";
    /// <summary>The CLI's output was not an event stream at all.</summary>
    public const string ProtocolCode = "SBX102";
    /// <summary>The sandbox timed out (<c>--timeout</c>; the CLI exits 124).</summary>
    public const string TimeoutCode = "SBX124";
    /// <summary>The OOM killer ended a process in the sandbox (memory limit; typically 137 = 128 + SIGKILL).</summary>
    public const string OutOfMemoryCode = "SBX137";
    /// <summary>Warning: process creation failed inside because of the pids limit.</summary>
    public const string PidsLimitCode = "SBX138";
    /// <summary>Warning: `sandbox test` saw no test summary: no test ran (a filter that matches nothing, no test project).</summary>
    public const string NoTestsCode = "SBX103";

    private const int TailLines = 20;

    private readonly TaskLoggingHelper _log;
    private readonly string _commandName;
    private readonly OutputRecognizer _recognizer;
    private readonly LineAssembler _stdout = new();
    private readonly LineAssembler _stderr = new();
    private readonly HashSet<string> _reported = new(StringComparer.Ordinal);
    private readonly Queue<string> _tail = new();
    private readonly List<string> _lines = [];
    private readonly List<LogEntry> _entries = [];
    private readonly object _gate = new();
    private string? _lastSignal;
    private bool _sawEvent;
    private bool _sawExited;

    public EventTranslator(TaskLoggingHelper log, string commandName, Func<string, bool>? fileExists = null)
    {
        _log = log;
        _commandName = commandName;
        _recognizer = new OutputRecognizer(fileExists);
    }

    public int? Passed { get; private set; }
    public int? Failed { get; private set; }
    public int? Skipped { get; private set; }
    public bool TimedOut { get; private set; }
    public bool OutOfMemory { get; private set; }

    /// <summary>One line of the CLI's stdout (a JSON object, without the newline).</summary>
    public void HandleEventLine(ReadOnlySpan<byte> line)
    {
        lock (_gate)
        {
            if (line.Trim((byte)' ').IsEmpty)
                return;
            JsonDocument document;
            try
            {
                var reader = new Utf8JsonReader(line);
                document = JsonDocument.ParseValue(ref reader);
            }
            catch (JsonException)
            {
                // Not an event (something wrote to the CLI's stdout directly): show it as it is.
                string text = Encoding.UTF8.GetString(line).TrimEnd('\r');
                Remember(text);
                _log.LogMessage(MessageImportance.Normal, "{0}", text);
                return;
            }
            using (document)
            {
                if (document.RootElement.ValueKind != JsonValueKind.Object)
                    return;
                _sawEvent = true;
                Handle(document.RootElement);
            }
        }
    }

    /// <summary>One line of the CLI's own stderr (in JSON mode it should have none but usage errors).</summary>
    public void HandleCliStderrLine(string line)
    {
        lock (_gate)
        {
            line = OutputRecognizer.StripAnsi(line).TrimEnd('\r');
            Remember(line);
            _log.LogMessage(MessageImportance.Normal, "{0}", line);
        }
    }

    /// <summary>The CLI has exited with <paramref name="exitCode"/> and its output is read to the end.</summary>
    public void Complete(int exitCode, bool cancelled)
    {
        lock (_gate)
        {
            FlushOutput();
            if (cancelled)
            {
                _log.LogMessage(MessageImportance.High, "sandbox: cancelled: the sandbox was stopped (exit {0})", exitCode);
                return;
            }
            if (exitCode == 0 && !_sawExited && !_log.HasLoggedErrors)
            {
                // Exit 0 with no exited event: not the sandbox CLI (SandboxCliPath=/bin/true), or one
                // that ran nothing. No tests ran, which must not read as a green build.
                LogError(ProtocolCode, $"sandbox {_commandName} exited 0 but reported no run{(_sawEvent ? "" : " (it printed no events)")}: is SandboxCliPath the sandbox CLI?" +
                    (_tail.Count > 0 ? " Its last lines of output:\n  " + string.Join("\n  ", _tail) : ""));
                return;
            }
            if (exitCode == 0 || _log.HasLoggedErrors)
                return;
            var message = new StringBuilder();
            message.Append(CultureInfo.InvariantCulture, $"sandbox {_commandName} failed with exit code {exitCode}");
            if (_lastSignal is not null)
                message.Append(CultureInfo.InvariantCulture, $" (killed by {_lastSignal})");
            if (!_sawEvent)
                message.Append(": the CLI printed no events");
            if (_tail.Count > 0)
            {
                message.Append(CultureInfo.InvariantCulture, $"; its last lines of output:");
                foreach (string l in _tail)
                    message.Append("\n  ").Append(l);
            }
            LogError(_sawEvent ? CommandFailedCode : ProtocolCode, message.ToString());
        }
    }

    private void Handle(JsonElement e)
    {
        switch (String(e, "event"))
        {
            case "note":
                _log.LogMessage(MessageImportance.Normal, "sandbox: {0}", String(e, "message") ?? "");
                break;
            case "started":
                _log.LogMessage(MessageImportance.Low, "sandbox: started (host pid {0})", Int(e, "pid")?.ToString(CultureInfo.InvariantCulture) ?? "?");
                break;
            case "output":
                Output(e);
                break;
            case "exited":
                Exited(e);
                break;
            case "error":
            {
                FlushOutput();
                string code = String(e, "code") ?? CommandFailedCode;
                LogError(code, String(e, "message") ?? "the sandbox could not run the command");
                break;
            }
            case "summary":
            {
                FlushOutput();
                if (e.TryGetProperty("seen", out JsonElement seen) && seen.ValueKind == JsonValueKind.True)
                {
                    Passed = Int(e, "passed");
                    Failed = Int(e, "failed");
                    Skipped = Int(e, "skipped");
                }
                else if (!_log.HasLoggedErrors)
                {
                    _log.LogWarning(null, NoTestsCode, null, null, 0, 0, 0, 0,
                        "sandbox {0}: no test summary was seen: no test ran (a --filter that matches nothing, or no test project?)", _commandName);
                }
                _log.LogMessage(MessageImportance.High, "sandbox {0}: {1}", _commandName, String(e, "message") ?? "");
                break;
            }
            default:
                _log.LogMessage(MessageImportance.Low, "sandbox: {0}", e.GetRawText());
                break;
        }
    }

    private void Output(JsonElement e)
    {
        bool stderr = String(e, "stream") == "stderr";
        byte[] data;
        if (e.TryGetProperty("text", out JsonElement text) && text.ValueKind == JsonValueKind.String)
            data = Encoding.UTF8.GetBytes(text.GetString()!);
        else if (e.TryGetProperty("base64", out JsonElement b64) && b64.ValueKind == JsonValueKind.String && b64.TryGetBytesFromBase64(out byte[]? bytes))
            data = bytes;
        else
            return;
        _lines.Clear();
        (stderr ? _stderr : _stdout).Append(data, _lines);
        foreach (string line in _lines)
            FeedLine(line);
    }

    private void Exited(JsonElement e)
    {
        _sawExited = true;
        FlushOutput();
        int? exitCode = Int(e, "exitCode");
        string reason = String(e, "reason") ?? "exited";
        string? message = String(e, "message");
        _lastSignal = String(e, "signalName");

        var info = new StringBuilder();
        info.Append(CultureInfo.InvariantCulture, $"sandbox: exited {exitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}");
        if (_lastSignal is not null)
            info.Append(CultureInfo.InvariantCulture, $" ({_lastSignal})");
        if (Double(e, "wallMs") is double wall)
            info.Append(CultureInfo.InvariantCulture, $" after {wall / 1000:0.0}s");
        if (Long(e, "peakMemoryBytes") is long peak)
            info.Append(CultureInfo.InvariantCulture, $", peak memory {peak / (1024.0 * 1024.0):0.#} MiB");
        _log.LogMessage(MessageImportance.Normal, "{0}", info.ToString());

        if (reason == "timeout")
        {
            TimedOut = true;
            LogError(TimeoutCode, message ?? "timed out: the sandbox and every process in it were killed");
        }
        else if (e.TryGetProperty("oomKilled", out JsonElement oom) && oom.ValueKind == JsonValueKind.True)
        {
            OutOfMemory = true;
            LogError(OutOfMemoryCode, message ?? $"the OOM killer ended a process in the sandbox (memory limit reached; exit {exitCode})");
        }
        else if (message is not null && exitCode is not 0)
        {
            _log.LogMessage(MessageImportance.High, "sandbox: {0}", message);
        }
        if (Int(e, "pidsLimitHits") is int hits and > 0)
        {
            _log.LogWarning(null, PidsLimitCode, null, null, 0, 0, 0, 0,
                "the sandbox reached its pids limit {0} time(s): process or thread creation failed inside", hits);
        }
    }

    private void FeedLine(string line)
    {
        Remember(OutputRecognizer.StripAnsi(line));
        _entries.Clear();
        _recognizer.Feed(line, _entries);
        LogEntries();
    }

    private void FlushOutput()
    {
        foreach (LineAssembler assembler in new[] { _stdout, _stderr })
        {
            if (assembler.Flush() is string last)
                FeedLine(last);
        }
        _entries.Clear();
        _recognizer.Flush(_entries);
        LogEntries();
    }

    private void LogEntries()
    {
        foreach (LogEntry entry in _entries)
        {
            switch (entry)
            {
                case MessageEntry m when m.Text.Trim().Length > 0: // blank lines only spread the log out
                    _log.LogMessage(m.Importance, "{0}", m.Text);
                    break;
                case DiagnosticEntry d when _reported.Add(d.Key):
                    if (d.IsWarning)
                        _log.LogWarning(d.Subcategory, d.Code, null, d.File, d.Line, d.Column, d.EndLine, d.EndColumn, "{0}", d.Message);
                    else
                        _log.LogError(d.Subcategory, d.Code, null, d.File, d.Line, d.Column, d.EndLine, d.EndColumn, "{0}", d.Message);
                    break;
            }
        }
        _entries.Clear();
    }

    private void LogError(string code, string message)
    {
        if (_reported.Add($"e|||||{code}|{message}"))
            _log.LogError(null, code, null, null, 0, 0, 0, 0, "{0}", message);
    }

    private void Remember(string line)
    {
        if (line.Trim().Length == 0)
            return;
        _tail.Enqueue(line);
        while (_tail.Count > TailLines)
            _tail.Dequeue();
    }

    private static string? String(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static int? Int(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

    private static long? Long(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long i) ? i : null;

    private static double? Double(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) ? d : null;
}
