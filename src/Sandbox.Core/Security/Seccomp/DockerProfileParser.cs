using System.Collections.Immutable;
using System.Globalization;
using System.Text.Json;

namespace Sandbox.Security.Seccomp;

/// <summary>
/// Reads a seccomp profile in Docker's JSON format (moby profiles/seccomp, the file behind
/// <c>--security-opt seccomp=FILE</c>), resolving it for one architecture and capability set the way
/// moby's setupSeccomp does: a rule whose "includes" are not met, or whose "excludes" are, is
/// dropped. Uses JsonDocument only (no reflection: NativeAOT).
/// </summary>
/// <remarks>
/// Format: <c>defaultAction</c>, <c>defaultErrnoRet</c>, <c>architectures</c> or <c>archMap</c>,
/// <c>syscalls[]</c> with <c>names</c> (or the older <c>name</c>), <c>action</c>, <c>errnoRet</c>,
/// <c>args[] {index, value, valueTwo, op}</c>, <c>includes</c>/<c>excludes</c>
/// <c>{arches, caps, minKernel}</c>; <c>comment</c>, <c>flags</c>, <c>listenerPath</c> and unknown
/// properties are ignored, and property names match case-insensitively, as Go's encoding/json does.
/// Syscall names the architecture does not have are kept here and skipped by the compiler, as
/// libseccomp skips them. An ERRNO or TRACE action without errnoRet means EPERM (runc).
/// </remarks>
public static class DockerProfileParser
{
    /// <summary>The capabilities Docker grants a container by default (moby oci/caps/defaults.go).</summary>
    public static IReadOnlySet<string> DockerDefaultCapabilities { get; } = new HashSet<string>(StringComparer.Ordinal)
    {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    };

    /// <summary>Parses for this process's architecture, with Docker's default capability set, ignoring minKernel.</summary>
    public static SeccompProfile Parse(string json) => Parse(json, DockerDefaultCapabilities);

    /// <summary>Parses for this process's architecture and the given capabilities (CAP_SYS_ADMIN or SYS_ADMIN), ignoring minKernel.</summary>
    public static SeccompProfile Parse(string json, IReadOnlySet<string> capabilities) =>
        Parse(json, capabilities, SeccompArchitecture.Current, kernelVersion: null);

    /// <param name="json">The profile.</param>
    /// <param name="capabilities">The sandbox's capabilities, with or without the CAP_ prefix.</param>
    /// <param name="architecture">The architecture for includes/excludes "arches" and archMap.</param>
    /// <param name="kernelVersion">The running kernel's version for includes/excludes "minKernel"; null ignores
    /// minKernel (a rule that requires one is kept, one excluded from one on is kept too).</param>
    /// <param name="name">A name for error messages, such as the file's path.</param>
    public static SeccompProfile Parse(string json, IReadOnlySet<string> capabilities, SeccompArchitecture architecture, Version? kernelVersion, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(capabilities);
        ArgumentNullException.ThrowIfNull(architecture);
        var caps = capabilities.Select(NormalizeCapability).ToHashSet(StringComparer.Ordinal);
        // Version(4, 8) sorts before Version(4, 8, 0): compare three parts always.
        Version? kernel = kernelVersion is null ? null : new Version(kernelVersion.Major, kernelVersion.Minor, Math.Max(kernelVersion.Build, 0));
        var context = new Context(name, architecture, caps, kernel);

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw context.Error("$", $"not valid JSON (line {(e.LineNumber ?? 0) + 1}, byte {(e.BytePositionInLine ?? 0) + 1}): {e.Message}", e);
        }

        using (document)
        {
            return ParseRoot(document.RootElement, context);
        }
    }

    private sealed record Context(string? Name, SeccompArchitecture Architecture, HashSet<string> Capabilities, Version? KernelVersion)
    {
        public SandboxException Error(string path, string message, Exception? inner = null) =>
            new(SandboxErrorCode.InvalidSpec, $"seccomp profile{(Name is null ? "" : $" {Name}")}: {path}: {message}", inner);
    }

    private static SeccompProfile ParseRoot(JsonElement root, Context context)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw context.Error("$", $"expected an object, found {Describe(root)}");

        string defaultActionName = RequiredString(root, "defaultAction", "$", context);
        int? defaultErrno = OptionalErrno(root, "defaultErrnoRet", "$", context);
        SeccompAction defaultAction = ParseAction(defaultActionName, defaultErrno, "$.defaultAction", context);

        ImmutableArray<string> architectures = ParseArchitectures(root, context);

        var rules = ImmutableArray.CreateBuilder<SeccompRule>();
        if (Property(root, "syscalls") is { } syscalls && syscalls.ValueKind != JsonValueKind.Null)
        {
            if (syscalls.ValueKind != JsonValueKind.Array)
                throw context.Error("$.syscalls", $"expected an array, found {Describe(syscalls)}");
            int index = 0;
            foreach (JsonElement entry in syscalls.EnumerateArray())
            {
                SeccompRule? rule = ParseRule(entry, $"$.syscalls[{index}]", context);
                if (rule is not null)
                    rules.Add(rule);
                index++;
            }
        }

        return new SeccompProfile
        {
            Name = context.Name,
            DefaultAction = defaultAction,
            Rules = rules.ToImmutable(),
            Architectures = architectures,
            // libseccomp: a call from an architecture not in the filter gets the "bad arch" action,
            // KILL by default. (Docker also lists i386 and x32 as sub-architectures of x86_64; this
            // compiler builds native-only filters, see SeccompProfile.Architectures.)
            ForeignArchitectureAction = SeccompAction.KillProcess,
            UnknownSyscallAction = SeccompAction.Enosys,
        };
    }

    private static ImmutableArray<string> ParseArchitectures(JsonElement root, Context context)
    {
        var result = ImmutableArray.CreateBuilder<string>();
        JsonElement? list = Property(root, "architectures");
        JsonElement? map = Property(root, "archMap");
        bool hasList = list is { ValueKind: JsonValueKind.Array } && list.Value.GetArrayLength() > 0;
        bool hasMap = map is { ValueKind: not JsonValueKind.Null } && map.Value.ValueKind == JsonValueKind.Array && map.Value.GetArrayLength() > 0;
        if (hasList && hasMap)
            throw context.Error("$", "use either 'architectures' or 'archMap', not both (as Docker requires)");

        if (list is { } l)
        {
            foreach ((string arch, string path) in StringArray(l, "$.architectures", context))
                result.Add(CheckArchitecture(arch, path, context));
        }

        if (map is { ValueKind: not JsonValueKind.Null } m)
        {
            if (m.ValueKind != JsonValueKind.Array)
                throw context.Error("$.archMap", $"expected an array, found {Describe(m)}");
            int i = 0;
            foreach (JsonElement entry in m.EnumerateArray())
            {
                string path = $"$.archMap[{i++}]";
                if (entry.ValueKind != JsonValueKind.Object)
                    throw context.Error(path, $"expected an object, found {Describe(entry)}");
                string arch = CheckArchitecture(RequiredString(entry, "architecture", path, context), path + ".architecture", context);
                var subs = Property(entry, "subArchitectures") is { } s
                    ? StringArray(s, path + ".subArchitectures", context).Select(x => CheckArchitecture(x.Value, x.Path, context)).ToList()
                    : [];
                // Docker adds the entry whose architecture is the native one, with its sub-architectures.
                if (context.Architecture.IsNamed(arch))
                {
                    result.Add(arch);
                    result.AddRange(subs);
                }
            }
        }
        return result.ToImmutable();
    }

    private static string CheckArchitecture(string arch, string path, Context context) =>
        arch.StartsWith("SCMP_ARCH_", StringComparison.Ordinal) && arch.Length > "SCMP_ARCH_".Length
            ? arch
            : throw context.Error(path, $"'{arch}' is not a libseccomp architecture name (SCMP_ARCH_X86_64, SCMP_ARCH_AARCH64, ...)");

    private static SeccompRule? ParseRule(JsonElement entry, string path, Context context)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw context.Error(path, $"expected an object, found {Describe(entry)}");

        var names = new List<string>();
        JsonElement? single = Property(entry, "name");
        JsonElement? many = Property(entry, "names");
        bool hasSingle = single is { ValueKind: JsonValueKind.String } && single.Value.GetString()!.Length > 0;
        bool hasMany = many is { ValueKind: JsonValueKind.Array } && many.Value.GetArrayLength() > 0;
        if (hasSingle && hasMany)
            throw context.Error(path, "use either 'name' or 'names', not both (as Docker requires)");
        if (single is { } s && s.ValueKind is not (JsonValueKind.Null or JsonValueKind.String))
            throw context.Error(path + ".name", $"expected a string, found {Describe(s)}");
        if (hasSingle)
            names.Add(single!.Value.GetString()!);
        if (many is { } m)
            names.AddRange(StringArray(m, path + ".names", context).Select(x => x.Value));
        if (names.Count == 0)
            throw context.Error(path, "a rule needs 'names' (or 'name')");

        string actionName = RequiredString(entry, "action", path, context);
        int? errno = OptionalErrno(entry, "errnoRet", path, context);
        SeccompAction action = ParseAction(actionName, errno, path + ".action", context);

        var conditions = ImmutableArray.CreateBuilder<SeccompArgCondition>();
        if (Property(entry, "args") is { ValueKind: not JsonValueKind.Null } args)
        {
            if (args.ValueKind != JsonValueKind.Array)
                throw context.Error(path + ".args", $"expected an array, found {Describe(args)}");
            int i = 0;
            foreach (JsonElement arg in args.EnumerateArray())
                conditions.Add(ParseCondition(arg, $"{path}.args[{i++}]", context));
            if (conditions.Count > SeccompCompiler.MaxConditions)
                throw context.Error(path + ".args", $"{conditions.Count} conditions; at most {SeccompCompiler.MaxConditions} are supported");
        }

        // Validate both filters fully before deciding, so that a typo is reported even in a rule
        // that happens not to apply here.
        Filter? includes = ParseFilter(entry, "includes", path, context);
        Filter? excludes = ParseFilter(entry, "excludes", path, context);
        if (excludes is { } ex && ex.Applies(context, exclude: true))
            return null;
        if (includes is { } inc && !inc.Applies(context, exclude: false))
            return null;

        return new SeccompRule(names.ToImmutableArray(), action, conditions.ToImmutable())
        {
            Comment = Property(entry, "comment") is { ValueKind: JsonValueKind.String } c ? c.GetString() : null,
        };
    }

    private sealed record Filter(List<string> Arches, List<string> Caps, Version? MinKernel)
    {
        /// <summary>
        /// moby profiles/seccomp/seccomp_linux.go: an exclude applies when the architecture is in its
        /// arches, or ANY of its caps is held, or the kernel is at least minKernel; an include is met
        /// when the architecture is in its arches, ALL its caps are held, and the kernel is at least
        /// minKernel (each part only when given).
        /// </summary>
        public bool Applies(Context context, bool exclude)
        {
            bool archListed = Arches.Any(context.Architecture.IsNamed);
            bool? kernelOk = MinKernel is null || context.KernelVersion is null ? null : context.KernelVersion >= MinKernel;
            if (exclude)
            {
                return (Arches.Count > 0 && archListed)
                    || Caps.Any(context.Capabilities.Contains)
                    || kernelOk == true;
            }
            return (Arches.Count == 0 || archListed)
                && Caps.All(context.Capabilities.Contains)
                && kernelOk != false;
        }
    }

    private static Filter? ParseFilter(JsonElement entry, string property, string rulePath, Context context)
    {
        if (Property(entry, property) is not { ValueKind: not JsonValueKind.Null } filter)
            return null;
        string path = $"{rulePath}.{property}";
        if (filter.ValueKind != JsonValueKind.Object)
            throw context.Error(path, $"expected an object, found {Describe(filter)}");
        var arches = Property(filter, "arches") is { } a ? StringArray(a, path + ".arches", context).Select(x => x.Value).ToList() : [];
        var caps = Property(filter, "caps") is { } c ? StringArray(c, path + ".caps", context).Select(x => NormalizeCapability(x.Value)).ToList() : [];
        Version? minKernel = null;
        if (Property(filter, "minKernel") is { ValueKind: not JsonValueKind.Null } k)
        {
            if (k.ValueKind != JsonValueKind.String)
                throw context.Error(path + ".minKernel", $"expected a string such as \"4.8\", found {Describe(k)}");
            minKernel = ParseKernelVersion(k.GetString()!) ?? throw context.Error(path + ".minKernel", $"'{k.GetString()}' is not a kernel version such as \"4.8\" or \"5.10.1\"");
        }
        return new Filter(arches, caps, minKernel);
    }

    /// <summary>"4.8", "5.10.1", "6.1.0-18-amd64" (the part after '-' ignored) → a Version; null when not one.</summary>
    public static Version? ParseKernelVersion(string text)
    {
        string core = text.Split('-', '+', ' ')[0];
        string[] parts = core.Split('.');
        if (parts.Length is < 2 or > 3)
            return null;
        var numbers = new int[3];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out numbers[i]))
                return null;
        }
        return new Version(numbers[0], numbers[1], numbers[2]);
    }

    private static SeccompArgCondition ParseCondition(JsonElement arg, string path, Context context)
    {
        if (arg.ValueKind != JsonValueKind.Object)
            throw context.Error(path, $"expected an object, found {Describe(arg)}");
        uint index = RequiredUInt(arg, "index", path, context, out string indexPath);
        if (index >= SeccompData.ArgCount)
            throw context.Error(indexPath, $"argument index {index} is outside 0..5");
        ulong value = OptionalUInt64(arg, "value", path, context) ?? 0;
        ulong valueTwo = OptionalUInt64(arg, "valueTwo", path, context) ?? 0;
        string op = RequiredString(arg, "op", path, context);
        SeccompArgOp parsed = op switch
        {
            "SCMP_CMP_EQ" => SeccompArgOp.EqualTo,
            "SCMP_CMP_NE" => SeccompArgOp.NotEqual,
            "SCMP_CMP_LT" => SeccompArgOp.LessThan,
            "SCMP_CMP_LE" => SeccompArgOp.LessOrEqual,
            "SCMP_CMP_GT" => SeccompArgOp.GreaterThan,
            "SCMP_CMP_GE" => SeccompArgOp.GreaterOrEqual,
            "SCMP_CMP_MASKED_EQ" => SeccompArgOp.MaskedEqual,
            _ => throw context.Error(path + ".op", $"unknown operator '{op}' (SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ)"),
        };
        // 64-bit comparisons, as libseccomp makes them for a 64-bit architecture.
        return new SeccompArgCondition((int)index, parsed, value, valueTwo);
    }

    private static SeccompAction ParseAction(string name, int? errno, string path, Context context) => name switch
    {
        "SCMP_ACT_ALLOW" => SeccompAction.Allow,
        "SCMP_ACT_ERRNO" => SeccompAction.Errno(errno ?? LinuxErrno.EPERM),
        "SCMP_ACT_KILL" or "SCMP_ACT_KILL_THREAD" => SeccompAction.KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction.KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction.Trap,
        "SCMP_ACT_LOG" => SeccompAction.Log,
        "SCMP_ACT_TRACE" => SeccompAction.Trace(errno ?? LinuxErrno.EPERM),
        "SCMP_ACT_NOTIFY" => throw context.Error(path, "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which Sandbox does not run"),
        _ => throw context.Error(path, $"unknown action '{name}' (SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_LOG, SCMP_ACT_TRACE)"),
    };

    private static string NormalizeCapability(string name)
    {
        string upper = name.Trim().ToUpperInvariant();
        return upper.StartsWith("CAP_", StringComparison.Ordinal) ? upper : "CAP_" + upper;
    }

    /// <summary>Go's encoding/json matches property names case-insensitively (an exact match first).</summary>
    private static JsonElement? Property(JsonElement obj, string name)
    {
        if (obj.TryGetProperty(name, out JsonElement exact))
            return exact;
        foreach (JsonProperty p in obj.EnumerateObject())
        {
            if (p.Name.Equals(name, StringComparison.OrdinalIgnoreCase))
                return p.Value;
        }
        return null;
    }

    private static string RequiredString(JsonElement obj, string name, string path, Context context)
    {
        JsonElement? value = Property(obj, name);
        if (value is null || value.Value.ValueKind == JsonValueKind.Null)
            throw context.Error($"{path}.{name}", "missing");
        if (value.Value.ValueKind != JsonValueKind.String)
            throw context.Error($"{path}.{name}", $"expected a string, found {Describe(value.Value)}");
        string text = value.Value.GetString()!;
        return text.Length > 0 ? text : throw context.Error($"{path}.{name}", "empty");
    }

    private static uint RequiredUInt(JsonElement obj, string name, string path, Context context, out string valuePath)
    {
        valuePath = $"{path}.{name}";
        JsonElement? value = Property(obj, name);
        if (value is null || value.Value.ValueKind == JsonValueKind.Null)
            throw context.Error(valuePath, "missing");
        if (value.Value.ValueKind != JsonValueKind.Number || !value.Value.TryGetUInt32(out uint n))
            throw context.Error(valuePath, $"expected a non-negative integer, found {Describe(value.Value)}");
        return n;
    }

    private static ulong? OptionalUInt64(JsonElement obj, string name, string path, Context context)
    {
        JsonElement? value = Property(obj, name);
        if (value is null || value.Value.ValueKind == JsonValueKind.Null)
            return null;
        if (value.Value.ValueKind != JsonValueKind.Number || !value.Value.TryGetUInt64(out ulong n))
            throw context.Error($"{path}.{name}", $"expected an integer 0..18446744073709551615, found {Describe(value.Value)}");
        return n;
    }

    private static int? OptionalErrno(JsonElement obj, string name, string path, Context context)
    {
        ulong? value = OptionalUInt64(obj, name, path, context);
        if (value is null)
            return null;
        return value <= SeccompReturn.MaxErrno
            ? (int)value.Value
            : throw context.Error($"{path}.{name}", $"errno {value} is above {SeccompReturn.MaxErrno} (MAX_ERRNO)");
    }

    private static List<(string Value, string Path)> StringArray(JsonElement element, string path, Context context)
    {
        var result = new List<(string, string)>();
        if (element.ValueKind == JsonValueKind.Null)
            return result;
        if (element.ValueKind != JsonValueKind.Array)
            throw context.Error(path, $"expected an array of strings, found {Describe(element)}");
        int i = 0;
        foreach (JsonElement item in element.EnumerateArray())
        {
            string itemPath = $"{path}[{i++}]";
            if (item.ValueKind != JsonValueKind.String)
                throw context.Error(itemPath, $"expected a string, found {Describe(item)}");
            string text = item.GetString()!;
            if (text.Length == 0)
                throw context.Error(itemPath, "empty");
            result.Add((text, itemPath));
        }
        return result;
    }

    private static string Describe(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => $"the string \"{Truncate(element.GetString()!)}\"",
        JsonValueKind.Number => $"the number {Truncate(element.GetRawText())}",
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => "null",
    };

    private static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
