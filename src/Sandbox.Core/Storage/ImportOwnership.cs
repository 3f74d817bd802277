using Sandbox.Identity;
using Sandbox.Runtime;

namespace Sandbox.Storage;

/// <summary>
/// How an import owns the files of the layers it unpacks: with a subordinate range (<see cref="Map"/>)
/// every file gets the owner its tar entry gives, written as the host id the run's map gives that
/// owner (0 → you, N → subuid start + N - 1), so that a <c>--userns subuid</c> sandbox shows the
/// image's owners; without one every file is yours (flattened), the only choice an unprivileged
/// user has without newuidmap.
/// </summary>
public sealed record ImportOwnership
{
    /// <summary>Flattened owners, and why (for the note an import prints when it drops owners).</summary>
    public static ImportOwnership Flatten(string because) => new() { FlattenedBecause = because };

    /// <summary>The map owners are kept for; null: flattened.</summary>
    public IdMapPlan? Map { get; init; }

    /// <summary>Why owners are flattened (when <see cref="Map"/> is null).</summary>
    public string? FlattenedBecause { get; init; }

    public IdMapping? Mapping => Map is null ? null : IdMapping.Of(Map);

    /// <summary>
    /// What a run's <c>--userns</c> means for its import: <c>single</c> flattens; <c>subuid</c> keeps
    /// owners (and fails without a range, as the run would); <c>auto</c> keeps them when a range and
    /// newuidmap/newgidmap are there, and otherwise flattens and says why.
    /// </summary>
    public static ImportOwnership Resolve(UserNamespaceMode mode, IdentityEnvironment env)
    {
        if (mode == UserNamespaceMode.Single)
            return Flatten("--userns single");
        string? why = IdMapResolver.TryResolveSubordinate(env, out IdMapPlan? plan);
        if (plan is not null)
            return new ImportOwnership { Map = plan };
        if (mode == UserNamespaceMode.Subuid)
            throw new SandboxException(SandboxErrorCode.IdMappingFailed, $"--userns subuid: {why}");
        return Flatten($"no subordinate id range: {why}");
    }
}
