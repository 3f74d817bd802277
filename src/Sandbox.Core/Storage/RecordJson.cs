using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Sandbox.Storage;

internal enum RecordJsonKind
{
    Null,
    False,
    True,
    Number,
    String,
    Array,
    Object,
}

/// <summary>A JSON value as <see cref="RecordJson"/> reads it.</summary>
internal sealed class RecordJsonValue
{
    public RecordJsonKind Kind { get; init; }

    /// <summary>A string's value, or a number's text as written.</summary>
    public string? Text { get; init; }

    public List<RecordJsonValue>? Items { get; init; }

    /// <summary>An object's members in document order, duplicates kept (read in order, the last wins, as with the serializer).</summary>
    public List<KeyValuePair<string, RecordJsonValue>>? Members { get; init; }
}

/// <summary>
/// A small JSON reader (RFC 8259) for the store's image records on the run path. Every
/// <c>sandbox run IMAGE</c> reads one record; with <see cref="JsonDocument"/> that read was the
/// run's largest managed cost of its own, about 50 µs (uprobes), most of it System.Text.Json's first
/// use: its reader's static set-up builds search tables for the characters a string must escape
/// (JsonReaderHelper's SearchValues, which rent from the shared array pool, whose first use seeds
/// a random number generator from /dev/urandom). A record is under a kilobyte of our own writer's
/// output, so a plain recursive descent does. It takes what the serializer writes and what RFC 8259
/// allows, and refuses the rest with a <see cref="JsonException"/>, as the serializer would.
/// </summary>
internal static class RecordJson
{
    /// <summary>Nesting deeper than this is refused (the serializer's default is 64).</summary>
    public const int MaxDepth = 64;

    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static RecordJsonValue Parse(ReadOnlySpan<byte> utf8)
    {
        var reader = new Reader(utf8);
        try
        {
            reader.SkipByteOrderMark();
            reader.SkipWhitespace();
            RecordJsonValue value = reader.Value(0);
            reader.SkipWhitespace();
            if (!reader.AtEnd)
                throw reader.Error("more data after the value");
            return value;
        }
        catch (DecoderFallbackException e)
        {
            throw new JsonException("the record is not valid UTF-8", e);
        }
    }

    private ref struct Reader(ReadOnlySpan<byte> text)
    {
        private readonly ReadOnlySpan<byte> _text = text;
        private int _at;

        public readonly bool AtEnd => _at >= _text.Length;

        public readonly JsonException Error(string what) => new($"{what} at byte {_at}");

        public void SkipByteOrderMark()
        {
            if (_text.StartsWith("\uFEFF"u8))
                _at = 3;
        }

        public void SkipWhitespace()
        {
            while (_at < _text.Length && _text[_at] is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r')
                _at++;
        }

        public RecordJsonValue Value(int depth)
        {
            if (AtEnd)
                throw Error("unexpected end");
            switch (_text[_at])
            {
                case (byte)'{':
                    return Object(depth + 1);
                case (byte)'[':
                    return Array(depth + 1);
                case (byte)'"':
                    return new RecordJsonValue { Kind = RecordJsonKind.String, Text = String() };
                case (byte)'t':
                    Literal("true"u8);
                    return new RecordJsonValue { Kind = RecordJsonKind.True };
                case (byte)'f':
                    Literal("false"u8);
                    return new RecordJsonValue { Kind = RecordJsonKind.False };
                case (byte)'n':
                    Literal("null"u8);
                    return new RecordJsonValue { Kind = RecordJsonKind.Null };
                default:
                    return new RecordJsonValue { Kind = RecordJsonKind.Number, Text = Number() };
            }
        }

        private RecordJsonValue Object(int depth)
        {
            if (depth > MaxDepth)
                throw Error($"nested deeper than {MaxDepth}");
            _at++; // {
            var members = new List<KeyValuePair<string, RecordJsonValue>>();
            SkipWhitespace();
            if (Next((byte)'}'))
                return new RecordJsonValue { Kind = RecordJsonKind.Object, Members = members };
            for (;;)
            {
                SkipWhitespace();
                if (AtEnd || _text[_at] != (byte)'"')
                    throw Error("expected a property name");
                string name = String();
                SkipWhitespace();
                if (!Next((byte)':'))
                    throw Error("expected ':'");
                SkipWhitespace();
                members.Add(new(name, Value(depth)));
                SkipWhitespace();
                if (Next((byte)'}'))
                    return new RecordJsonValue { Kind = RecordJsonKind.Object, Members = members };
                if (!Next((byte)','))
                    throw Error("expected ',' or '}'");
            }
        }

        private RecordJsonValue Array(int depth)
        {
            if (depth > MaxDepth)
                throw Error($"nested deeper than {MaxDepth}");
            _at++; // [
            var items = new List<RecordJsonValue>();
            SkipWhitespace();
            if (Next((byte)']'))
                return new RecordJsonValue { Kind = RecordJsonKind.Array, Items = items };
            for (;;)
            {
                SkipWhitespace();
                items.Add(Value(depth));
                SkipWhitespace();
                if (Next((byte)']'))
                    return new RecordJsonValue { Kind = RecordJsonKind.Array, Items = items };
                if (!Next((byte)','))
                    throw Error("expected ',' or ']'");
            }
        }

        private bool Next(byte b)
        {
            if (_at < _text.Length && _text[_at] == b)
            {
                _at++;
                return true;
            }
            return false;
        }

        private void Literal(ReadOnlySpan<byte> word)
        {
            if (!_text[_at..].StartsWith(word))
                throw Error("unexpected character");
            _at += word.Length;
        }

        // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        private string Number()
        {
            int start = _at;
            Next((byte)'-');
            if (Next((byte)'0'))
            {
            }
            else if (!Digits())
            {
                throw Error("unexpected character");
            }
            if (Next((byte)'.') && !Digits())
                throw Error("expected a digit after '.'");
            if (Next((byte)'e') || Next((byte)'E'))
            {
                if (!Next((byte)'+'))
                    Next((byte)'-');
                if (!Digits())
                    throw Error("expected a digit in the exponent");
            }
            return Encoding.ASCII.GetString(_text[start.._at]);
        }

        private bool Digits()
        {
            int start = _at;
            while (_at < _text.Length && _text[_at] is >= (byte)'0' and <= (byte)'9')
                _at++;
            return _at > start;
        }

        private string String()
        {
            _at++; // "
            int start = _at;
            // The common case: no escapes, one decode of the bytes as they are.
            while (_at < _text.Length && _text[_at] != (byte)'"' && _text[_at] != (byte)'\\')
            {
                if (_text[_at] < 0x20)
                    throw Error("a control character in a string");
                _at++;
            }
            if (AtEnd)
                throw Error("unterminated string");
            if (_text[_at] == (byte)'"')
            {
                string plain = s_strictUtf8.GetString(_text[start.._at]);
                _at++;
                return plain;
            }
            var builder = new StringBuilder(s_strictUtf8.GetString(_text[start.._at]));
            for (;;)
            {
                if (AtEnd)
                    throw Error("unterminated string");
                byte b = _text[_at];
                if (b == (byte)'"')
                {
                    _at++;
                    return builder.ToString();
                }
                if (b == (byte)'\\')
                {
                    _at++;
                    Escape(builder);
                    continue;
                }
                int run = _at;
                while (_at < _text.Length && _text[_at] != (byte)'"' && _text[_at] != (byte)'\\')
                {
                    if (_text[_at] < 0x20)
                        throw Error("a control character in a string");
                    _at++;
                }
                builder.Append(s_strictUtf8.GetString(_text[run.._at]));
            }
        }

        private void Escape(StringBuilder builder)
        {
            if (AtEnd)
                throw Error("unterminated string");
            byte e = _text[_at++];
            switch (e)
            {
                case (byte)'"': builder.Append('"'); break;
                case (byte)'\\': builder.Append('\\'); break;
                case (byte)'/': builder.Append('/'); break;
                case (byte)'b': builder.Append('\b'); break;
                case (byte)'f': builder.Append('\f'); break;
                case (byte)'n': builder.Append('\n'); break;
                case (byte)'r': builder.Append('\r'); break;
                case (byte)'t': builder.Append('\t'); break;
                case (byte)'u':
                    char c = Hex4();
                    if (char.IsHighSurrogate(c))
                    {
                        // A pair, or the text is not valid UTF-16 (the serializer refuses it too).
                        if (!_text[_at..].StartsWith("\\u"u8))
                            throw Error("a lone surrogate");
                        _at += 2;
                        char low = Hex4();
                        if (!char.IsLowSurrogate(low))
                            throw Error("a lone surrogate");
                        builder.Append(c).Append(low);
                    }
                    else if (char.IsLowSurrogate(c))
                    {
                        throw Error("a lone surrogate");
                    }
                    else
                    {
                        builder.Append(c);
                    }
                    break;
                default:
                    throw Error("an unknown escape");
            }
        }

        private char Hex4()
        {
            if (_at + 4 > _text.Length ||
                !ushort.TryParse(_text.Slice(_at, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ushort code))
                throw Error("expected four hex digits");
            _at += 4;
            return (char)code;
        }
    }
}
