using System.Text;

namespace Sandbox.MSBuild;

/// <summary>
/// Splits a property's text into arguments the way a POSIX shell splits words (no expansion):
/// whitespace separates; '…' is literal; "…" groups, with \" and \\ escaped inside; a backslash
/// outside quotes escapes the next character. So
/// <c>--filter "FullyQualifiedName~Slow&amp;Category!=Db" --blame-hang-timeout 5m</c> is four arguments.
/// </summary>
internal static class ArgumentSplitter
{
    public static List<string> Split(string? text)
    {
        var result = new List<string>();
        if (string.IsNullOrWhiteSpace(text))
            return result;
        var current = new StringBuilder();
        bool inWord = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsWhiteSpace(c))
            {
                if (inWord)
                {
                    result.Add(current.ToString());
                    current.Clear();
                    inWord = false;
                }
                continue;
            }
            inWord = true;
            switch (c)
            {
                case '\'':
                {
                    int end = text.IndexOf('\'', i + 1);
                    if (end < 0)
                        throw new FormatException($"unterminated ' in: {text}");
                    current.Append(text, i + 1, end - i - 1);
                    i = end;
                    break;
                }
                case '"':
                {
                    i++;
                    for (; i < text.Length && text[i] != '"'; i++)
                    {
                        if (text[i] == '\\' && i + 1 < text.Length && text[i + 1] is '"' or '\\')
                            i++;
                        current.Append(text[i]);
                    }
                    if (i >= text.Length)
                        throw new FormatException($"unterminated \" in: {text}");
                    break;
                }
                case '\\' when i + 1 < text.Length:
                    current.Append(text[++i]);
                    break;
                default:
                    current.Append(c);
                    break;
            }
        }
        if (inWord)
            result.Add(current.ToString());
        return result;
    }
}
