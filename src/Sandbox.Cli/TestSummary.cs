using System.Text;
using System.Text.RegularExpressions;

namespace Sandbox.Cli;

/// <summary>
/// Counts from `dotnet test`'s own summary lines, read as the output streams by: VSTest prints
/// "Passed!  - Failed: 0, Passed: 5, Skipped: 1, Total: 6, ..." per test assembly; Microsoft.Testing.Platform
/// prints "total: 6", "failed: 0", "succeeded: 5", "skipped: 1" after "Test run summary"; with a
/// console logger of normal verbosity VSTest prints "Total tests: 6", "Passed: 5", ... after "Test Run Successful.".
/// </summary>
internal sealed partial class TestSummary
{
    private readonly StringBuilder _partial = new();
    private bool _inPlatformSummary;
    private bool _inVsTestSummary;

    public int Passed { get; private set; }
    public int Failed { get; private set; }
    public int Skipped { get; private set; }
    public int Assemblies { get; private set; }

    public bool Seen => Assemblies > 0;

    [GeneratedRegex(@"(Passed|Failed)!\s+-\s+Failed:\s+(?<f>\d+),\s+Passed:\s+(?<p>\d+),\s+Skipped:\s+(?<s>\d+),\s+Total:\s+\d+")]
    private static partial Regex VsTestLine();

    [GeneratedRegex(@"^\s*(?<k>total|failed|succeeded|skipped):\s+(?<v>\d+)\s*$")]
    private static partial Regex PlatformLine();

    [GeneratedRegex(@"^\s*(?<k>Passed|Failed|Skipped):\s+(?<v>\d+)\s*$")]
    private static partial Regex VsTestCountLine();

    [GeneratedRegex(@"\x1b\[[0-9;?]*[A-Za-z]")]
    private static partial Regex AnsiEscape();

    public void Feed(ReadOnlySpan<byte> data)
    {
        _partial.Append(Encoding.UTF8.GetString(data));
        string text = _partial.ToString();
        int last = text.LastIndexOf('\n');
        if (last < 0)
            return;
        foreach (string line in text[..last].Split('\n'))
            FeedLine(AnsiEscape().Replace(line.TrimEnd('\r'), ""));
        _partial.Clear().Append(text[(last + 1)..]);
    }

    public void FeedLine(string line)
    {
        Match m = VsTestLine().Match(line);
        if (m.Success)
        {
            Assemblies++;
            Failed += int.Parse(m.Groups["f"].Value);
            Passed += int.Parse(m.Groups["p"].Value);
            Skipped += int.Parse(m.Groups["s"].Value);
            return;
        }
        if (line.StartsWith("Test Run Successful.", StringComparison.Ordinal) || line.StartsWith("Test Run Failed.", StringComparison.Ordinal) || line.StartsWith("Test Run Aborted.", StringComparison.Ordinal))
        {
            _inVsTestSummary = true;
            Assemblies++;
            return;
        }
        if (_inVsTestSummary)
        {
            if (line.Contains("Total time", StringComparison.Ordinal))
            {
                _inVsTestSummary = false;
                return;
            }
            if (VsTestCountLine().Match(line) is { Success: true } c)
            {
                int v = int.Parse(c.Groups["v"].Value);
                switch (c.Groups["k"].Value)
                {
                    case "Failed": Failed += v; break;
                    case "Passed": Passed += v; break;
                    case "Skipped": Skipped += v; break;
                }
                return;
            }
        }
        if (line.Contains("Test run summary:", StringComparison.Ordinal))
        {
            _inPlatformSummary = true;
            Assemblies++;
            return;
        }
        if (_inPlatformSummary && PlatformLine().Match(line) is { Success: true } p)
        {
            int v = int.Parse(p.Groups["v"].Value);
            switch (p.Groups["k"].Value)
            {
                case "failed": Failed += v; break;
                case "succeeded": Passed += v; break;
                case "skipped": Skipped += v; break;
            }
        }
    }
}
