using System.Globalization;
using System.Text.RegularExpressions;

namespace Sandbox.Cli;

/// <summary>Durations as docker and Go write them: 1.5s, 500ms, 2m, 1h30m; a bare number is seconds.</summary>
internal static partial class DurationParser
{
    [GeneratedRegex(@"\G(?<n>\d+(\.\d+)?)(?<u>ms|s|m|h)")]
    private static partial Regex Part();

    /// <summary>The longest accepted duration: timers (CancelAfter) take at most 2^32-2 ms, about 49 days.</summary>
    public static readonly TimeSpan Maximum = TimeSpan.FromDays(30);

    public static TimeSpan Parse(string text, string option)
    {
        try
        {
            return ParseUnchecked(text.Trim(), text, option);
        }
        catch (Exception e) when (e is OverflowException or ArgumentException)
        {
            throw Invalid(text, option);
        }
    }

    private static TimeSpan ParseUnchecked(string t, string text, string option)
    {
        if (t.Length == 0 || !char.IsAsciiDigit(t[0]))
            throw Invalid(text, option);
        if (double.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double bare))
            return Check(TimeSpan.FromSeconds(bare), text, option);
        TimeSpan total = TimeSpan.Zero;
        int at = 0;
        while (at < t.Length)
        {
            Match m = Part().Match(t, at);
            if (!m.Success)
                throw Invalid(text, option);
            double n = double.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture);
            total += m.Groups["u"].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(n),
                "s" => TimeSpan.FromSeconds(n),
                "m" => TimeSpan.FromMinutes(n),
                _ => TimeSpan.FromHours(n),
            };
            at += m.Length;
        }
        return at == 0 ? throw Invalid(text, option) : Check(total, text, option);
    }

    private static TimeSpan Check(TimeSpan value, string text, string option) =>
        value > TimeSpan.Zero && value <= Maximum ? value : throw Invalid(text, option);

    private static SandboxException Invalid(string text, string option) =>
        new(SandboxErrorCode.InvalidSpec, $"{option} {text}: expected a positive duration up to 30 days, such as 30s, 500ms, 5m or 1h30m");
}
