using System.Collections.Immutable;
using Sandbox.Identity;
using Sandbox.Rootfs;
using Sandbox.Runtime;

namespace Sandbox;

/// <summary>Turns a user's <see cref="SandboxSpec"/> into a <see cref="RuntimePlan"/> (pure: no privileges, no side effects).</summary>
public static class SandboxPlanner
{
    /// <param name="idMapsResolved">
    /// Called with the id maps as soon as they are known, before the rest is planned: the runner asks
    /// the user-namespace holder for them then, so that its answer comes while this plans.
    /// </param>
    /// <param name="cgroupView">The sandbox's own cgroup, shown to it at /sys/fs/cgroup; null when it has none.</param>
    public static RuntimePlan Plan(SandboxSpec spec, HostContext host, Action<IdMapPlan>? idMapsResolved = null, Cgroups.CgroupView? cgroupView = null)
    {
        if (spec.Root is ImageRoot image)
            spec = ApplyImageConfig(spec, image.Image);
        if (spec.Command.IsDefaultOrEmpty || spec.Command[0].Length == 0)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, spec.Root is ImageRoot
                ? "the image has no Entrypoint or Cmd: give the command after the image, e.g. sandbox run IMAGE -- sh"
                : "no command given: put the command after the options, e.g. sandbox run -- dotnet test");
        if (spec.WorkingDirectory is { } wd && !wd.StartsWith('/'))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"the working directory must be an absolute path: {wd}");
        // CancelAfter takes at most 2^32-2 ms; a longer timeout must fail here, before anything starts.
        if (spec.Timeout is TimeSpan timeout && (timeout <= TimeSpan.Zero || timeout > TimeSpan.FromDays(30)))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"the timeout must be between 0 and 30 days, not {timeout}");
        if (spec.Binds.Length + spec.TmpfsMounts.Length > 0)
            CheckMountTargets(spec); // parses each --tmpfs, which throws with the cause

        IdMapPlan idMaps = IdMapResolver.Resolve(spec.UserNamespace, host.Identity);
        if (spec.Root is ImageRoot imageRoot)
            CheckImageOwners(imageRoot.Image, idMaps); // throws when the layers were written for another range
        idMapsResolved?.Invoke(idMaps);
        NamespaceSet namespaces = NamespaceSet.All;
        if (spec.Network == NetworkMode.Host)
            namespaces &= ~NamespaceSet.Network;

        SandboxUser? user = ResolveUser(spec);
        // Only 0 exists in a single-id map. An image's User then falls back to root with a warning
        // (SandboxRunner), as the image is not the caller's to change; an explicit --user is a
        // request to drop root, which must not be turned silently into root (rootless podman refuses too).
        if (spec.User is not null && user is { } asked && (asked.Uid != 0 || asked.Gid != 0) && idMaps.Kind == IdMapKind.SingleId)
            throw new SandboxException(SandboxErrorCode.InvalidSpec,
                $"--user {spec.User}: only root (0) exists in a single-id user namespace ({(spec.UserNamespace == UserNamespaceMode.Single ? "--userns single" : "you have no subordinate range")}), so the command would run as root: " +
                "use --userns subuid, which needs a range in /etc/subuid and /etc/subgid (sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER) and newuidmap/newgidmap (package uidmap)");
        IdMapping? mapping = IdMapping.Of(idMaps);
        if (user is not null && mapping is not null && !mapping.Covers(user.Uid, user.Gid))
            throw new SandboxException(SandboxErrorCode.InvalidSpec,
                $"{(spec.User is null ? "the image's User" : "--user " + spec.User)}: {user.Uid}:{user.Gid} is not mapped in the sandbox, whose ids are {mapping.Describe()} " +
                $"(your /etc/subuid and /etc/subgid ranges): use ids up to {mapping.MaxUid}:{mapping.MaxGid}, or give yourself larger ranges (sudo usermod --add-subuids and --add-subgids)");
        // Under a single-id map only root exists inside, and the runner runs the payload as root.
        SandboxUser? homeOwner = mapping is not null && user is { Uid: not 0 } ? user : null;
        ImmutableArray<SetupStep> steps = RootfsPlanner.Plan(spec, host, clearGroups: idMaps.Kind == IdMapKind.SubordinateRange, homeOwner, cgroupView);
        ImmutableArray<string> environment = BuildEnvironment(spec, host, out string searchPath, user?.Home);
        ulong capabilities = Security.Capabilities.Resolve(spec.CapAdd, spec.CapDrop);
        var process = new ProcessPlan(
            spec.Command[0],
            spec.Command,
            environment,
            searchPath,
            spec.WorkingDirectory ?? "/")
        {
            Uid = user?.Uid,
            Gid = user?.Gid,
            CapabilityBoundingSet = capabilities,
            SeccompProgram = Security.SeccompPlanner.Program(spec.Seccomp, capabilities),
        };
        return new RuntimePlan(process, namespaces, idMaps, steps);
    }

    /// <summary>
    /// Docker's two rules for where binds and tmpfs mounts go (daemon/volumes.go): not on the root
    /// ("destination can't be '/'"), which is the host's, the directory's or the image's, and not
    /// twice on one path ("Duplicate mount point"), where the later mount would hide the earlier one
    /// without a word. Paths compare after normalising (<c>/a/./b/</c> is <c>/a/b</c>).
    /// </summary>
    private static void CheckMountTargets(SandboxSpec spec)
    {
        var targets = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (BindMount bind in spec.Binds)
            Claim(bind.SandboxPath, $"-v {bind.HostPath}:{bind.SandboxPath}");
        foreach (string tmpfs in spec.TmpfsMounts)
            Claim(Rootfs.TmpfsMount.Parse(tmpfs).Path, $"--tmpfs {tmpfs}");

        void Claim(string target, string option)
        {
            string path = Rootfs.HostPaths.Normalize(target);
            if (path == "/")
                throw new SandboxException(SandboxErrorCode.InvalidSpec,
                    $"{option}: a mount cannot replace the sandbox's root; mount below / (e.g. /data), or run on a root file system of your own: sandbox run DIR -- COMMAND");
            if (!targets.TryAdd(path, option))
                throw new SandboxException(SandboxErrorCode.InvalidSpec,
                    $"{option}: {path} is already the target of {targets[path]}; give each path in the sandbox one mount");
        }
    }

    /// <summary>
    /// Whether the image's files show their owners in a sandbox with <paramref name="idMaps"/>. Layers
    /// that keep owners other than root were written for one subordinate-range map:
    /// <list type="bullet">
    /// <item>the same map: the image's owners, exactly (null);</item>
    /// <item>a single-id map: it runs, and those files show as nobody (65534) inside, with only
    /// their "other" permission bits, as podman's do with a map that lacks their owners; a warning
    /// says so (returned);</item>
    /// <item>another subordinate range (/etc/subuid changed since the import): the files would show
    /// wrong owners or none, so the run fails (<see cref="SandboxErrorCode.LayerIdMapMismatch"/>)
    /// and says how to re-import.</item>
    /// </list>
    /// Flattened layers are the caller's files: root's inside under every map.
    /// </summary>
    public static string? CheckImageOwners(Images.ImageRecord image, IdMapPlan idMaps)
    {
        IdMapping? written = image.IdMap;
        if (written is null)
            return null;
        string name = image.Name ?? image.Digest;
        IdMapping? run = IdMapping.Of(idMaps);
        if (run is null)
        {
            return $"warning: {name} keeps its files' owners for your subordinate range ({written.Describe()}); this run has a single-id map " +
                "(--userns single, or no range or newuidmap now), so files of owners other than root show as nobody (65534) and only their 'other' permissions apply. " +
                "Run with --userns subuid to see the image's owners";
        }
        foreach (Images.LayerInfo layer in image.Layers)
        {
            if (layer.Ownership.Map is IdMapping map && map != run)
            {
                throw new SandboxException(SandboxErrorCode.LayerIdMapMismatch,
                    $"{name}: its layers keep their owners for the subordinate range {map.Describe()}, but this run maps {run.Describe()} " +
                    "(/etc/subuid or /etc/subgid changed): its files would show wrong owners. Import the image again (sandbox image import FILE), " +
                    "or run it with --userns single (owners other than root then show as nobody); `sandbox image rm` and `prune` cannot remove files of ids " +
                    "outside your current range: remove the old layers as root");
            }
        }
        return null;
    }

    /// <summary>The payload's user: --user, else the image's User; names are looked up in the sandbox's root.</summary>
    private static SandboxUser? ResolveUser(SandboxSpec spec)
    {
        string? user = spec.User ?? (spec.Root is ImageRoot image && !string.IsNullOrEmpty(image.Image.Config.User) ? image.Image.Config.User : null);
        if (user is null)
            return null;
        Func<string, string?> reader = spec.Root switch
        {
            ImageRoot i => UserResolver.ImageFileReader(i.Image),
            DirectoryRoot d => UserResolver.DirectoryFileReader(Path.GetFullPath(d.Path)),
            _ => UserResolver.DirectoryFileReader("/"),
        };
        return UserResolver.Resolve(user, reader);
    }

    /// <summary>
    /// What <c>docker run IMAGE [COMMAND]</c> takes from the image's config: the command is Entrypoint
    /// followed by the given command, or by Cmd when none is given; the image's Env comes before the
    /// user's -e; WorkingDir unless -w.
    /// </summary>
    public static SandboxSpec ApplyImageConfig(SandboxSpec spec, Images.ImageRecord image)
    {
        Images.ImageConfig config = image.Config;
        ImmutableArray<string> entrypoint = config.Entrypoint ?? ImmutableArray<string>.Empty;
        ImmutableArray<string> command = spec.Command.IsDefaultOrEmpty ? config.Cmd ?? ImmutableArray<string>.Empty : spec.Command;
        var environment = ImmutableArray.CreateBuilder<KeyValuePair<string, string>>();
        foreach (string entry in config.Env)
        {
            int eq = entry.IndexOf('=');
            if (eq > 0)
                environment.Add(new(entry[..eq], entry[(eq + 1)..]));
        }
        environment.AddRange(spec.Environment);
        return spec with
        {
            Command = entrypoint.AddRange(command),
            Environment = environment.ToImmutable(),
            WorkingDirectory = spec.WorkingDirectory ?? (string.IsNullOrEmpty(config.WorkingDir) ? null : config.WorkingDir),
        };
    }

    /// <summary>
    /// A clean environment: PATH, HOME, TERM and what the user passes. Nothing else of the caller's
    /// environment gets in, so a CI runner's secrets stay out.
    /// </summary>
    public static ImmutableArray<string> BuildEnvironment(SandboxSpec spec, HostContext host, out string searchPath, string? userHome = null)
    {
        var vars = new List<KeyValuePair<string, string>>
        {
            new("PATH", spec.Root is HostRoot && !string.IsNullOrEmpty(host.Path) ? host.Path : RootfsPlanner.DefaultPath),
            new("HOME", spec.Root is ImageRoot && userHome is not null ? userHome : RootfsPlanner.SandboxHome(spec, host)),
        };
        if (!string.IsNullOrEmpty(host.Term))
            vars.Add(new("TERM", host.Term));
        foreach (var (name, value) in spec.Environment)
        {
            if (name.Length == 0 || name.Contains('='))
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"invalid environment variable name '{name}'");
            vars.RemoveAll(v => v.Key == name);
            vars.Add(new(name, value));
        }
        // Loops, not LINQ, on the warm-start path (RootfsPlanner says why).
        searchPath = "";
        var environment = ImmutableArray.CreateBuilder<string>(vars.Count);
        foreach (var (name, value) in vars)
        {
            if (name == "PATH")
                searchPath = value;
            environment.Add($"{name}={value}");
        }
        return environment.MoveToImmutable();
    }
}
