using System.Diagnostics;
using System.Globalization;
using Sandbox.Images;

namespace Sandbox.Cli;

/// <summary>
/// The import's progress: on a terminal, one line on stderr redrawn in place (what is being read, a
/// bar, the percentage, bytes of layer blobs read of the total, and the average speed), cleared at the
/// end; warnings are printed above it. When stderr is not a terminal (CI logs, pipes, --quiet),
/// nothing but the warnings.
/// </summary>
/// <remarks>
/// Drawn by hand rather than with a console library: every start of the CLI, <c>sandbox run</c>'s
/// included, pays for the static data of every library linked into the NativeAOT binary (one object
/// per type with static fields, allocated at start-up). Spectre.Console, used here before, cost
/// 0.05 to 0.2 ms of each warm start and 1.1 MB of the binary for this one line.
/// </remarks>
internal static class ImportProgressView
{
    /// <summary>Runs <paramref name="import"/>, showing its progress as described above.</summary>
    /// <param name="terminal">Where the line is drawn (tests give a StringWriter); default: stderr.</param>
    /// <param name="warnings">Where warnings go when not interactive; default: stderr.</param>
    /// <param name="width">The terminal's width in columns; default: the console's (stdout's or stdin's
    /// terminal, else $COLUMNS), else 80.</param>
    public static T Run<T>(bool interactive, Func<IProgress<ImportProgress>, T> import,
                           TextWriter? terminal = null, TextWriter? warnings = null, int? width = null)
    {
        if (!interactive)
            return import(new WarningsOnly(warnings ?? Console.Error));
        using var line = new ProgressLine(terminal ?? Console.Error, width ?? TerminalWidth(), Stopwatch.GetTimestamp);
        return import(line);
    }

    private static int TerminalWidth()
    {
        try
        {
            return Console.WindowWidth > 0 ? Console.WindowWidth : 80;
        }
        catch (IOException)
        {
            return 80;
        }
    }

    private sealed class WarningsOnly(TextWriter warnings) : IProgress<ImportProgress>
    {
        public void Report(ImportProgress p)
        {
            if (p.Stage == ImportStage.Warning)
                warnings.WriteLine($"sandbox: warning: {p.Message}");
        }
    }
}

/// <summary>
/// One line of progress on a terminal, redrawn in place with a carriage return and ECMA-48's "erase
/// in line" (ESC [ K). Reports come from several unpacking threads, once per read of a layer, so
/// they are serialised and the line is redrawn at most ten times a second (and for the last report).
/// </summary>
internal sealed class ProgressLine : IProgress<ImportProgress>, IDisposable
{
    internal const string ClearLine = "\r\u001b[K";
    private const int BarWidth = 20;
    private const int FiguresWidth = 36;

    private readonly TextWriter _terminal;
    private readonly int _width;
    private readonly Func<long> _timestamp;
    private readonly long _started;
    private readonly long _redrawInterval = Stopwatch.Frequency / 10;
    private readonly Lock _gate = new();
    private string _description = "";
    private long _done, _total; // _total 0: the size is not known yet
    private long _drawnAt;
    private bool _drawn;

    /// <param name="timestamp">A clock in <see cref="Stopwatch"/> ticks (tests give their own).</param>
    public ProgressLine(TextWriter terminal, int width, Func<long> timestamp)
    {
        _terminal = terminal;
        _width = width;
        _timestamp = timestamp;
        _started = timestamp();
    }

    public void Report(ImportProgress p)
    {
        lock (_gate)
        {
            long now = _timestamp();
            if (p.Stage == ImportStage.Warning)
            {
                _terminal.Write(ClearLine);
                _terminal.WriteLine($"sandbox: warning: {p.Message}");
                Draw(now);
                return;
            }
            _description = p.Message;
            if (p.BytesTotal > 0 && p.Stage is ImportStage.Unpacking or ImportStage.LayerReused)
            {
                _total = p.BytesTotal;
                _done = Math.Min(p.BytesDone, p.BytesTotal);
            }
            if (p.Stage == ImportStage.Done)
                _done = _total;
            // Not on every change of description: layers unpack in parallel, and their reports
            // alternate.
            if (!_drawn || p.Stage == ImportStage.Done || now - _drawnAt >= _redrawInterval)
                Draw(now);
        }
    }

    /// <summary>Clears the line: the import's own output (or the sandbox's) follows on a clean line.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_drawn)
                _terminal.Write(ClearLine);
            _terminal.Flush();
        }
    }

    private void Draw(long now)
    {
        double seconds = (now - _started) / (double)Stopwatch.Frequency;
        _terminal.Write(ClearLine + Render(_description, _done, _total, seconds, _width));
        _terminal.Flush();
        _drawnAt = now;
        _drawn = true;
    }

    /// <summary>
    /// The line: the description, then (once the size is known) a bar, the percentage, bytes done of
    /// the total and the average speed. The bar keeps its column while the figures change, and the
    /// line stays shorter than the terminal, whose wrapping would defeat the carriage return: the
    /// description is cut first, then the bar is left out.
    /// </summary>
    internal static string Render(string description, long done, long total, double seconds, int width)
    {
        int room = Math.Max(width - 1, 1);
        if (total <= 0)
            return Cut(description, room);
        int percent = (int)(done * 100 / total);
        string speed = seconds > 0 ? ImageCommand.Size((long)(done / seconds)) + "/s" : "?/s";
        string figures = string.Create(CultureInfo.InvariantCulture,
            $"{percent,3}% {ImageCommand.Size(done)} / {ImageCommand.Size(total)} {speed}");
        int filled = (int)(done * BarWidth / total);
        string bar = new string('━', filled) + new string('─', BarWidth - filled);
        // Room for the widest figures ("100% 999.9 MB / 999.9 MB 999.9 MB/s"), so that the bar stays put.
        int figuresRoom = Math.Max(figures.Length, FiguresWidth);
        int descriptionRoom = room - figuresRoom - 1 - (BarWidth + 1);
        if (descriptionRoom >= 10)
            return Cut(description, descriptionRoom).PadRight(descriptionRoom) + " " + bar + " " + figures;
        descriptionRoom = room - figuresRoom - 1;
        if (descriptionRoom >= 0)
            return Cut(description, descriptionRoom).PadRight(descriptionRoom) + " " + figures;
        return Cut(figures, room);
    }

    private static string Cut(string text, int room) =>
        text.Length <= room ? text : room <= 1 ? text[..room] : text[..(room - 1)] + "…";
}
