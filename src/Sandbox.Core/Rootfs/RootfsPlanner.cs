using System.Collections.Immutable;
using System.Globalization;
using Sandbox.Cgroups;
using Sandbox.Identity;
using Sandbox.Linux;
using Sandbox.Runtime;

namespace Sandbox.Rootfs;

/// <summary>The facts about the calling host that a plan depends on; tests build their own.</summary>
/// <param name="SocketDirectories">
/// Host directories of per-user sockets that a sandbox of the host's root must not reach: /run/user
/// and $XDG_RUNTIME_DIR (see <see cref="UserSocketDirectories"/>). Default: looked up on this host
/// when a plan of the host's root needs them, and only then (no cost to other roots' starts).
/// </param>
/// <param name="EngineSockets">
/// The sockets of container and VM engines on the host (see <see cref="ExistingEngineSockets"/>);
/// default: looked up as <paramref name="SocketDirectories"/> are.
/// </param>
public sealed record HostContext(
    string? Home,
    string? Path,
    string? Term,
    Identity.IdentityEnvironment Identity,
    string? RuntimeDirectory = null,
    ImmutableArray<string> SocketDirectories = default,
    ImmutableArray<string> EngineSockets = default)
{
    /// <summary>
    /// Sockets whose group is as good as root on the host: docker's (group docker), lxd's and incus's
    /// (lxd, incus-admin), libvirt's (libvirt), and the root-only ones of containerd, podman and
    /// buildkit. Under <c>--userns single</c> a sandbox keeps the caller's supplementary groups: with
    /// setgroups denied they cannot be dropped (user_namespaces(7); CVE-2014-8989), as bubblewrap's
    /// cannot. So host mode covers these with /dev/null, as runc masks paths; a subordinate range's
    /// sandboxes have no groups (ClearGroupsStep), and a -v of one still binds it on purpose.
    /// </summary>
    internal static readonly string[] KnownEngineSockets =
    {
        "/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock", "/run/podman/podman.sock",
        "/run/buildkit/buildkitd.sock", "/var/snap/lxd/common/lxd/unix.socket", "/var/lib/lxd/unix.socket",
        "/var/lib/incus/unix.socket", "/run/libvirt/libvirt-sock", "/var/run/libvirt/libvirt-sock",
    };

    public static HostContext Current() => new(
        System.Environment.GetEnvironmentVariable("HOME"),
        System.Environment.GetEnvironmentVariable("PATH"),
        System.Environment.GetEnvironmentVariable("TERM"),
        Sandbox.Identity.IdentityEnvironment.Current(),
        RuntimeDirectory: System.IO.Path.TrimEndingDirectorySeparator(Sandbox.Runtime.ProgramDirectory.Path));

    /// <summary><see cref="SocketDirectories"/>, looked up on this host when not given.</summary>
    internal ImmutableArray<string> SocketDirectoriesHere() => SocketDirectories.IsDefault
        ? UserSocketDirectories(System.Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR"), Directory.Exists, System.Environment.GetEnvironmentVariable("TMPDIR"))
        : SocketDirectories;

    /// <summary><see cref="EngineSockets"/>, looked up on this host when not given.</summary>
    internal ImmutableArray<string> EngineSocketsHere() => EngineSockets.IsDefault ? ExistingEngineSockets(File.Exists) : EngineSockets;

    /// <summary>The <see cref="KnownEngineSockets"/> that exist, each once (/var/run is a link to /run).</summary>
    public static ImmutableArray<string> ExistingEngineSockets(Func<string, bool> exists)
    {
        var found = ImmutableArray.CreateBuilder<string>();
        foreach (string socket in KnownEngineSockets)
        {
            if (exists(socket) && HostPaths.Resolve(socket) is var resolved && !found.Contains(resolved))
                found.Add(resolved);
        }
        return found.ToImmutable();
    }

    /// <summary>
    /// /run/user and $XDG_RUNTIME_DIR, those that exist. They hold the sockets of the user's session:
    /// systemd --user (whose StartTransientUnit runs any command outside any sandbox), the D-Bus
    /// session bus, ssh and gpg agents, podman's API, our user-namespace holder. A read-only bind does
    /// not stop connect(2) on a socket (fs/namei.c, sb_permission(): a read-only mount refuses writes
    /// to regular files, directories and symlinks only), and to those services root in the sandbox
    /// is the caller's uid, so host mode hides these directories with an empty tmpfs. $TMPDIR too
    /// (/tmp is fresh anyway): every .NET process of the user, this CLI and an MSBuild running the
    /// task included, listens there for diagnostic clients (dotnet-diagnostic-PID-…-socket), whose
    /// commands read its environment and load a library into it, outside the sandbox; ssh-agent and
    /// tmux put their sockets there as well.
    /// </summary>
    public static ImmutableArray<string> UserSocketDirectories(string? xdgRuntimeDir, Func<string, bool> exists, string? tmpDir = null)
    {
        var found = ImmutableArray.CreateBuilder<string>();
        if (exists("/run/user"))
            found.Add("/run/user");
        foreach (string? dir in (ReadOnlySpan<string?>)[xdgRuntimeDir, tmpDir])
        {
            if (dir is { Length: > 1 } && dir.StartsWith('/') && exists(dir))
            {
                string resolved = HostPaths.Resolve(dir);
                if (resolved != "/" && !RootfsPlanner.IsUnderAny(resolved, found))
                    found.Add(resolved);
            }
        }
        return found.ToImmutable();
    }
}

/// <summary>
/// Builds the ordered set-up steps for a sandbox's root: the bubblewrap layout. The child first
/// pivots into a scratch tmpfs (keeping the host's tree at /oldroot), assembles the new root at
/// /newroot from binds of /oldroot paths, then pivots into it and detaches everything else.
/// </summary>
public static class RootfsPlanner
{
    public const string Scratch = "/tmp";
    public const string NewRoot = "/newroot";
    public const string OldRoot = "/oldroot";

    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    // runc's defaults (libcontainer/specconv: maskedPaths, readonlyPaths): kernel interfaces that leak
    // host information or allow changing the host, hidden or made read-only in every container.
    private static readonly string[] s_maskedProcPaths =
    {
        "acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi",
    };
    private static readonly string[] s_readOnlyProcPaths = { "bus", "fs", "irq", "sys", "sysrq-trigger" };
    private static readonly string[] s_maskedSysPaths = { "/sys/firmware", "/sys/devices/virtual/powercap" };

    private const MountFlags TmpfsFlags = MountFlags.NoSuid | MountFlags.NoDev;

    // The host's session sockets (HostContext.UserSocketDirectories), in host mode: another root has
    // none of the host's directories. One under the fresh /tmp or $HOME is hidden already.
    private static List<string> HiddenSocketDirectories(SandboxSpec spec, HostContext host, string home)
    {
        var hidden = new List<string>();
        if (spec.Root is HostRoot)
        {
            foreach (string d in host.SocketDirectoriesHere())
            {
                // A runtime directory set to one of the system's top directories (XDG_RUNTIME_DIR=/usr,
                // seen after su and in containers) is left as it is: an empty tmpfs would hide /usr.
                if (!IsUnder(d, "/tmp") && !IsUnder(d, home) && !IsSystemTopDirectory(d))
                    hidden.Add(d);
            }
        }
        return hidden;
    }

    /// <summary>
    /// The path of $HOME inside: the caller's home in host mode (when it exists and is not one of the
    /// system's top directories), /root otherwise. The home gets a fresh tmpfs, which must not hide
    /// /usr or /etc from the payload (a service account's HOME may be such a directory).
    /// </summary>
    public static string SandboxHome(SandboxSpec spec, HostContext host)
    {
        if (spec.Root is not HostRoot || host.Home is not { Length: > 1 } home || !home.StartsWith('/') || !Directory.Exists(home))
            return "/root";
        string resolved = HostPaths.Resolve(home);
        return IsSystemTopDirectory(resolved) ? "/root" : resolved;
    }

    // hier(7)'s top-level directories, and those of merged-/usr systems; /root and /tmp are homes.
    private static bool IsSystemTopDirectory(string path) => path is "/" or "/bin" or "/boot" or "/dev" or "/etc" or "/home"
        or "/lib" or "/lib32" or "/lib64" or "/libx32" or "/media" or "/mnt" or "/opt" or "/proc" or "/run" or "/sbin"
        or "/srv" or "/sys" or "/usr" or "/var";

    /// <param name="homeOwner">
    /// The payload's user when it is not root and its ids are mapped (a subordinate range): the
    /// fresh $HOME is made its own, as a user's home is, or it could not write there.
    /// </param>
    /// <param name="cgroupView">The sandbox's own cgroup, to be shown at /sys/fs/cgroup; null when it has none.</param>
    public static ImmutableArray<SetupStep> Plan(SandboxSpec spec, HostContext host, bool clearGroups, SandboxUser? homeOwner = null, CgroupView? cgroupView = null)
    {
        var steps = ImmutableArray.CreateBuilder<SetupStep>();
        // Roots other than the host's are the user's own (or an image's copy on write): missing mount
        // points are created in them, as docker does.
        bool directoryRoot = spec.Root is DirectoryRoot or ImageRoot;
        string home = SandboxHome(spec, host);

        if (clearGroups)
            steps.Add(new ClearGroupsStep());
        steps.Add(new UnshareCgroupNamespaceStep());

        // Our mounts must not propagate back to the host (mount_namespaces(7), MS_SLAVE). These five
        // steps are the same for every plan, as is /dev (AddDev): a holder's spare may bring a mount
        // namespace in which they are done (sandbox_init.c, prepare_mount_namespace does them; keep
        // the two in step).
        steps.Add(new MountStep(null, "/", null, MountFlags.Recursive | MountFlags.Slave) { PreparedBySpare = true });
        steps.Add(new MountStep("tmpfs", Scratch, "tmpfs", TmpfsFlags, "mode=0755") { PreparedBySpare = true });
        steps.Add(new MakeDirectoryStep(HostPaths.Under(Scratch, NewRoot)) { PreparedBySpare = true });
        steps.Add(new MakeDirectoryStep(HostPaths.Under(Scratch, OldRoot)) { PreparedBySpare = true });
        steps.Add(new PivotRootStep(Scratch, OldRoot.TrimStart('/')) { PreparedBySpare = true });

        bool readOnlyRoot = spec.Root is not ImageRoot { ReadOnly: false };
        if (spec.Root is ImageRoot image)
        {
            switch (image.Driver)
            {
                case StorageDriver.FuseOverlayfs:
                    AddFuseOverlayRoot(steps, image);
                    break;
                case StorageDriver.Copy:
                    AddCopiedRoot(steps, image);
                    break;
                default:
                    // Auto is resolved by the runner before planning (StorageDriverSelector); a plan
                    // made without it takes the default, kernel overlay.
                    AddOverlayRoot(steps, image);
                    break;
            }
        }
        else
        {
            string rootSource = spec.Root switch
            {
                HostRoot => OldRoot,
                DirectoryRoot d => HostPaths.Under(OldRoot, ResolveExistingDirectory(d.Path, "root directory")),
                _ => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"this root is not supported: {spec.Root}"),
            };
            steps.Add(new MountStep(rootSource, NewRoot, null, MountFlags.Bind | MountFlags.Recursive));
        }

        // Paths that get a fresh tmpfs: what the host has below them is not what the sandbox sees.
        // (Loops, not LINQ, on this warm-start path: LINQ's first use of each operator costs NativeAOT a
        // generic dictionary lookup and interface dispatch resolution; 4.7% of a warm start's user
        // time went to System.Linq in perf.)
        var tmpfsMounts = new List<TmpfsMount>(spec.TmpfsMounts.Length);
        foreach (string t in spec.TmpfsMounts)
            tmpfsMounts.Add(TmpfsMount.Parse(t));
        List<string> hiddenSockets = HiddenSocketDirectories(spec, host, home);
        var freshMounts = new List<string> { "/tmp", home };
        freshMounts.AddRange(hiddenSockets);
        foreach (TmpfsMount t in tmpfsMounts)
            freshMounts.Add(t.Path);
        var binds = new List<(string Source, string Target, bool ReadOnly, bool IsFile)>(spec.Binds.Length);
        foreach (BindMount b in spec.Binds)
            binds.Add(ResolveBind(b, spec.Root, freshMounts));
        if (directoryRoot)
        {
            // The root is writable until the next step: create the mount points it lacks (as docker does).
            foreach (string dir in new[] { "/proc", "/dev", "/tmp", home })
                AddDirectories(steps, dir);
            if (cgroupView is not null)
                AddDirectories(steps, "/sys");
            foreach (TmpfsMount t in tmpfsMounts)
                AddDirectories(steps, t.Path);
            foreach (var (source, target, _, isFile) in binds)
                AddMountPoint(steps, target, isFile);
        }
        steps.Add(new SetMountAttributesStep(NewRoot, (readOnlyRoot ? MountAttributes.ReadOnly : MountAttributes.None) | MountAttributes.NoSuid, MountAttributes.None, Recursive: true));

        AddDev(steps);
        AddProc(steps);
        if (cgroupView is not null)
            AddCgroupView(steps, cgroupView, spec.Root is HostRoot);

        // First, so that a $HOME below one of them (an odd $XDG_RUNTIME_DIR) is made again and mounted on top.
        foreach (string sockets in hiddenSockets)
            steps.Add(new MountStep("tmpfs", In(sockets), "tmpfs", TmpfsFlags | MountFlags.NoExec, "mode=0755"));
        steps.Add(new MountStep("tmpfs", In("/tmp"), "tmpfs", TmpfsFlags, "mode=1777"));
        // $HOME may lie under /tmp (CI runners do that), just hidden by the fresh /tmp: recreate it.
        // An image's root is a throwaway copy already: its home directories stay as the image has them.
        if (!directoryRoot)
            AddDirectories(steps, home);
        if (spec.Root is not ImageRoot)
        {
            // tmpfs(5) uid= and gid= own its root directory, ids of the user namespace that mounts it.
            string homeData = homeOwner is { } owner
                ? string.Create(CultureInfo.InvariantCulture, $"mode=0755,uid={owner.Uid},gid={owner.Gid}")
                : "mode=0755";
            steps.Add(new MountStep("tmpfs", In(home), "tmpfs", TmpfsFlags, homeData));
            AddHomeFiles(steps, home, spec.HomeFiles);
        }
        else if (!spec.HomeFiles.IsDefaultOrEmpty)
        {
            throw new SandboxException(SandboxErrorCode.InvalidSpec,
                "files in $HOME are only made for the host's root or a directory root, whose $HOME is a fresh tmpfs; an image keeps its home as it has it");
        }
        if (spec.Root is HostRoot)
        {
            // Optional: one may vanish between planning and set-up (the engine stopped).
            foreach (string socket in host.EngineSocketsHere())
            {
                if (!IsUnderAny(socket, freshMounts))
                    steps.Add(new MountStep(In("/dev/null"), In(socket), null, MountFlags.Bind) { Optional = true });
            }
        }
        foreach (TmpfsMount tmpfs in tmpfsMounts)
        {
            if (!directoryRoot)
                AddDirectories(steps, tmpfs.Path);
            steps.Add(new MountStep("tmpfs", In(tmpfs.Path), "tmpfs", tmpfs.Flags, tmpfs.Data));
        }

        foreach (var (source, target, readOnly, isFile) in binds)
        {
            if (!directoryRoot)
                AddMountPoint(steps, target, isFile);
            steps.Add(new MountStep(HostPaths.Under(OldRoot, source), In(target), null, MountFlags.Bind | MountFlags.Recursive));
            if (readOnly)
                steps.Add(new SetMountAttributesStep(In(target), MountAttributes.ReadOnly, MountAttributes.None, Recursive: true));
        }
        // Our own binaries (the CLI, the executor, sandbox-init) must never be writable from inside,
        // or a payload could replace what the host runs next (the outcome of CVE-2019-5736). When a
        // writable bind holds them (a CLI built inside the workspace), they are bound read-only on top.
        // Only a writable bind can hold them: without one, no lookups of the directory.
        if (host.RuntimeDirectory is string runtime && HasWritable(binds) && Directory.Exists(runtime))
        {
            string resolved = HostPaths.Resolve(runtime);
            foreach (var (source, target, readOnly, _) in binds)
            {
                if (readOnly || !IsUnder(resolved, source))
                    continue;
                string inside = HostPaths.Normalize(target + resolved[source.TrimEnd('/').Length..]);
                steps.Add(new MountStep(HostPaths.Under(OldRoot, resolved), In(inside), null, MountFlags.Bind | MountFlags.Recursive));
                steps.Add(new SetMountAttributesStep(In(inside), MountAttributes.ReadOnly, MountAttributes.None, Recursive: true));
            }
        }

        // A missing working directory is made, as docker and podman make it (runc creates the cwd in
        // the root after the mounts), where the sandbox may write: anywhere in an image's writable copy,
        // else in its fresh tmpfs mounts (/tmp, $HOME, --tmpfs) and what is bound below them. Elsewhere
        // the root is read-only, and the chdir's error says so (SandboxProcess.ExecFailure).
        // (SandboxPlanner has refused a relative one.)
        if (spec.WorkingDirectory is { } workdir
            && ((spec.Root is ImageRoot && !readOnlyRoot) || IsUnderAny(HostPaths.Normalize(workdir), freshMounts)))
            AddDirectories(steps, workdir);

        // Always set: a new UTS namespace starts with a copy of the host's name (uts_namespaces(7)),
        // which the sandbox is not to show.
        steps.Add(new SetHostnameStep(spec.Hostname is { Length: > 0 } hostname ? hostname : SandboxSpec.DefaultHostname));
        if (spec.Network == NetworkMode.None)
            steps.Add(new LoopbackUpStep());

        steps.Add(new PivotRootStep(NewRoot, null));
        var confined = ImmutableArray.CreateBuilder<SetupStep>(steps.Count);
        foreach (SetupStep step in steps)
            confined.Add(ConfineToNewRoot(step));
        return confined.MoveToImmutable();
    }

    private static string In(string sandboxPath) => HostPaths.Under(NewRoot, sandboxPath);

    /// <summary>
    /// overlayfs in the user namespace (Linux 5.11+): the image's layers as lower directories,
    /// highest first, and an upper and work directory on the scratch tmpfs, so that the container's
    /// writes vanish with its mount namespace and nothing is left to clean up. "userxattr" makes
    /// overlay keep its own metadata in user.overlay.* xattrs, which an unprivileged user may write
    /// (Documentation/filesystems/overlayfs.rst, "Non-standard behavior"). The options must fit in one
    /// page: the layers are named relative to their directory (we chdir there first), as short
    /// keys, not as absolute paths.
    /// </summary>
    /// <summary>
    /// The most layers one kernel overlay mount takes here: its options are one page (4000 bytes
    /// used), each lower layer a 20-character key and a colon, beside "lowerdir=", the upper and work
    /// directories and "userxattr" (under 64 bytes without --keep).
    /// </summary>
    public const int MaxOverlayLayers = (4000 - 64) / 21;

    private static void AddOverlayRoot(ImmutableArray<SetupStep>.Builder steps, ImageRoot image)
    {
        var layers = CheckLayers(image, out string layerIdentities);
        string store = System.IO.Path.GetDirectoryName(layers[0])!;
        // Loops, not LINQ: on this warm-start path NativeAOT resolved Reverse().Select()'s generic
        // virtual methods at run time (about 0.1 ms in perf).
        var lowerNames = new string[layers.Length];
        for (int i = 0; i < layers.Length; i++)
        {
            if (System.IO.Path.GetDirectoryName(layers[i]) != store)
                throw new SandboxException(SandboxErrorCode.Internal, "the image's layers are not in one store directory");
            lowerNames[layers.Length - 1 - i] = System.IO.Path.GetFileName(layers[i]); // highest first
        }
        string lower = string.Join(':', lowerNames);
        // Also with --read-only: the mount is then made read-only (mount_setattr), which keeps a
        // one-layer image valid (overlay wants two lower layers when it has no upper).
        string upper = "/upper", work = "/work";
        if (image.KeepDirectory is string keep)
        {
            // overlayfs splits its options at commas and takes a backslash as an escape
            // (fs/overlayfs/params.c, ovl_next_opt): a store path with either needs them escaped.
            string kept = HostPaths.Under(OldRoot, HostPaths.Resolve(System.IO.Path.GetFullPath(keep)))
                .Replace("\\", "\\\\", StringComparison.Ordinal).Replace(",", "\\,", StringComparison.Ordinal);
            (upper, work) = (kept + "/upper", kept + "/work");
        }
        string data = $"lowerdir={lower},upperdir={upper},workdir={work},userxattr";
        // The mount data is one page (mount(2)).
        if (data.Length > 4000)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, data.Length - upper.Length - work.Length + "/upper/work".Length <= 4000
                ? $"the --keep directory's path is too long for an overlay mount's options ({upper.Length} characters): choose a store with a shorter path (--root)"
                : $"image {image.Image.Name} has too many layers ({layers.Length}) for one overlay mount's options (about {MaxOverlayLayers}): run it with --storage-driver fuse-overlayfs or copy (auto picks one of them)");
        // Without --keep, a holder's spare may come with this very overlay mounted in its prepared
        // mount namespace (sandbox_init.c, mount_overlay replays these steps; keep the two in step).
        bool replayable = image.KeepDirectory is null;
        if (replayable)
        {
            steps.Add(new MakeDirectoryStep("/upper") { OverlayPreparedBySpare = true });
            steps.Add(new MakeDirectoryStep("/work") { OverlayPreparedBySpare = true });
        }
        steps.Add(new ChangeDirectoryStep(HostPaths.Under(OldRoot, HostPaths.Resolve(store))) { OverlayPreparedBySpare = replayable });
        steps.Add(new MountStep("overlay", NewRoot, "overlay", MountFlags.None, data) { OverlayPreparedBySpare = replayable, LowerIdentities = layerIdentities });
        steps.Add(new ChangeDirectoryStep("/") { OverlayPreparedBySpare = replayable });
    }

    /// <summary>The image's layer directories (lowest first), each checked to exist.</summary>
    internal static ImmutableArray<string> CheckLayers(ImageRoot image) => CheckLayers(image, out _);

    /// <param name="identities">Which directories the layers are (<see cref="Syscalls.DirectoryIdentity"/>), ':'-separated.</param>
    internal static ImmutableArray<string> CheckLayers(ImageRoot image, out string identities)
    {
        var layers = image.Image.LayerDirectories;
        if (layers.IsDefaultOrEmpty)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"image {image.Image.Name ?? image.Image.Digest} has no layers");
        var ids = new string[layers.Length];
        for (int i = 0; i < layers.Length; i++)
        {
            // One stat(2), not Directory.Exists's path handling around it: each warm `run IMAGE` checks.
            ids[i] = Syscalls.DirectoryIdentity(layers[i])
                ?? throw new SandboxException(SandboxErrorCode.InvalidSpec, $"layer {layers[i]} of image {image.Image.Name ?? image.Image.Digest} is missing from the store: import the image again");
        }
        identities = string.Join(':', ids);
        return layers;
    }

    /// <summary>
    /// fuse-overlayfs, as rootless podman runs it (containers/storage's mount_program), but started
    /// by the executor inside the sandbox's user and mount namespaces, on the scratch root, before
    /// the new root is used: it mounts at /newroot and daemonizes once the mount is in place (so the
    /// step waits for its first process to exit 0). The daemon stays in the sandbox's PID namespace
    /// and is killed with it when PID 1 exits: nothing outlives the sandbox.
    /// The program is the host's, run from the scratch root: its ELF interpreter, its libraries and
    /// /dev/fuse are looked up there, so the host's /usr (and /lib*, /etc for ld.so.cache) are bound in.
    /// The scratch root, and these binds with it, are detached by the final pivot_root.
    /// </summary>
    private static void AddFuseOverlayRoot(ImmutableArray<SetupStep>.Builder steps, ImageRoot image)
    {
        var layers = CheckLayers(image);
        string program = image.FuseOverlayfsProgram
            ?? throw new SandboxException(SandboxErrorCode.Internal, "the fuse-overlayfs driver was chosen without a program");
        AddHostProgramRuntime(steps);
        string upper = "/upper", work = "/work";
        if (image.KeepDirectory is string keep)
        {
            string kept = HostPaths.Under(OldRoot, HostPaths.Resolve(System.IO.Path.GetFullPath(keep)));
            (upper, work) = (kept + "/upper", kept + "/work");
        }
        else
        {
            steps.Add(new MakeDirectoryStep("/upper"));
            steps.Add(new MakeDirectoryStep("/work"));
        }
        var lowers = layers.Reverse().Select(l => HostPaths.Under(OldRoot, HostPaths.Resolve(l))).ToList();
        steps.Add(FuseOverlayfsStep(HostPaths.Under(OldRoot, HostPaths.Resolve(program)), lowers, upper, work, NewRoot));
        // Its daemon holds /dev/fuse open from here on; the sandbox's /dev must not have it.
        steps.Add(new UnmountStep("/dev"));
    }

    /// <summary>
    /// The step that mounts fuse-overlayfs (highest layer first in <paramref name="lowers"/>). Its
    /// option syntax has no escapes: ',' and ':' cannot appear in a path.
    /// </summary>
    internal static RunProgramStep FuseOverlayfsStep(string program, IReadOnlyList<string> lowers, string upper, string work, string target)
    {
        foreach (string path in lowers.Append(upper).Append(work))
        {
            if (path.Contains(',') || path.Contains(':'))
                throw new SandboxException(SandboxErrorCode.InvalidSpec,
                    $"fuse-overlayfs cannot use {path}: its options cannot carry a path with ',' or ':' (choose another store with --root, or --storage-driver copy)");
        }
        string options = $"lowerdir={string.Join(':', lowers)},upperdir={upper},workdir={work}";
        return new RunProgramStep(program, ["fuse-overlayfs", "-o", options, target], ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    }

    /// <summary>
    /// The top-level directories a dynamically linked host program needs (merged /usr or not), and
    /// /proc: fuse-overlayfs reads the id maps and /proc/sys/kernel/overflowuid to know which ids it
    /// may give files.
    /// </summary>
    private static readonly string[] s_programRuntime = { "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "proc" };

    /// <summary>
    /// The host's program directories on the scratch root (symlinks as symlinks: /lib -> usr/lib on
    /// a merged-/usr system), and /dev/null and /dev/fuse, so that a host program can run there
    /// before the new root exists. The two devices are on a tmpfs of their own at /dev, unmounted once
    /// the program is done: the sandbox's /dev is built at /dev on the scratch root too (or there
    /// already, in a holder's prepared mount namespace), and gets neither it nor its entries.
    /// </summary>
    private static void AddHostProgramRuntime(ImmutableArray<SetupStep>.Builder steps)
    {
        foreach (string name in s_programRuntime)
        {
            string host = "/" + name;
            var info = new DirectoryInfo(host);
            if (info.LinkTarget is string link)
            {
                steps.Add(new SymlinkStep(link, host));
            }
            else if (info.Exists)
            {
                steps.Add(new MakeDirectoryStep(host));
                steps.Add(new MountStep(HostPaths.Under(OldRoot, host), host, null, MountFlags.Bind | MountFlags.Recursive));
            }
        }
        // The program itself is run through /oldroot (it may live in ~/bin or /opt); its interpreter
        // and libraries are found through the binds above.
        steps.Add(new MakeDirectoryStep("/dev"));
        steps.Add(new MountStep("tmpfs", "/dev", "tmpfs", MountFlags.NoSuid | MountFlags.NoExec, "mode=0755"));
        foreach (string device in new[] { "null", "fuse" })
        {
            steps.Add(new CreateFileStep("/dev/" + device, 0b110_110_110));
            steps.Add(new MountStep(HostPaths.Under(OldRoot, "/dev/" + device), "/dev/" + device, null, MountFlags.Bind));
        }
    }

    /// <summary>The copy driver: the runner copied the layers into a host directory; it is bound as the root.</summary>
    private static void AddCopiedRoot(ImmutableArray<SetupStep>.Builder steps, ImageRoot image)
    {
        CheckLayers(image);
        string copied = image.CopiedRoot
            ?? throw new SandboxException(SandboxErrorCode.Internal, "the copy driver was chosen without a copied root");
        steps.Add(new MountStep(HostPaths.Under(OldRoot, HostPaths.Resolve(copied)), NewRoot, null, MountFlags.Bind | MountFlags.Recursive));
    }

    /// <summary>Every step that acts on a path under the new root resolves it inside that root.</summary>
    private static SetupStep ConfineToNewRoot(SetupStep step) =>
        step.TargetPath is string target && target.StartsWith(NewRoot + "/", StringComparison.Ordinal)
            ? step with { ResolveIn = NewRoot }
            : step;

    private static void AddDirectories(ImmutableArray<SetupStep>.Builder steps, string sandboxPath)
    {
        foreach (string dir in HostPaths.Ancestry(HostPaths.Normalize(sandboxPath)))
            steps.Add(new MakeDirectoryStep(In(dir)));
    }

    /// <summary>
    /// <see cref="SandboxSpec.HomeFiles"/>, in the tmpfs just mounted on <paramref name="home"/>:
    /// the directories below it, then the empty file. A name must stay below $HOME: relative, no
    /// "." or ".." component (the steps themselves resolve every path inside the new root).
    /// </summary>
    private static void AddHomeFiles(ImmutableArray<SetupStep>.Builder steps, string home, ImmutableArray<string> files)
    {
        if (files.IsDefaultOrEmpty)
            return;
        foreach (string file in files)
        {
            string[] parts = file.Split('/');
            if (file.Length == 0 || file.StartsWith('/') || file.Contains('\0') || parts.Any(p => p is "" or "." or ".."))
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"'{file}' is not a file name below $HOME (relative, without '.', '..' or empty components)");
            string path = home.TrimEnd('/');
            for (int i = 0; i < parts.Length - 1; i++)
            {
                path += "/" + parts[i];
                steps.Add(new MakeDirectoryStep(In(path)));
            }
            steps.Add(new CreateFileStep(In(path + "/" + parts[^1])));
        }
    }

    private static void AddMountPoint(ImmutableArray<SetupStep>.Builder steps, string target, bool isFile)
    {
        if (!isFile)
        {
            AddDirectories(steps, target);
            return;
        }
        string parent = System.IO.Path.GetDirectoryName(target) ?? "/";
        if (parent != "/")
            AddDirectories(steps, parent);
        steps.Add(new CreateFileStep(In(target)));
    }

    private static void AddDev(ImmutableArray<SetupStep>.Builder steps)
    {
        // Built at /dev on the scratch root by the same native code that builds it in a holder's
        // prepared mount namespace (sandbox_kernel.h, sbx_build_dev), so a plan that joins one
        // skips the build; either way one recursive bind puts it on the new root.
        steps.Add(new BuildDevStep { PreparedBySpare = true });
        steps.Add(new MountStep("/dev", In("/dev"), null, MountFlags.Bind | MountFlags.Recursive));
    }

    private static void AddProc(ImmutableArray<SetupStep>.Builder steps)
    {
        // A fresh procfs for the new PID namespace: the payload sees only its own processes. What
        // this kernel lacks of the paths below is skipped when the steps run (Optional: ENOENT), as
        // runc does, so planning makes no stat of them.
        steps.Add(new MountStep("proc", In("/proc"), "proc", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec));
        foreach (string name in s_readOnlyProcPaths)
        {
            string target = In("/proc/" + name);
            steps.Add(new MountStep(target, target, null, MountFlags.Bind | MountFlags.Recursive) { Optional = true });
            steps.Add(new SetMountAttributesStep(target, MountAttributes.ReadOnly | MountAttributes.NoSuid | MountAttributes.NoDev | MountAttributes.NoExec, MountAttributes.None, Recursive: true) { Optional = true });
        }
        // runc also hides these sysfs directories (firmware tables, power capping controls).
        string nullDevice = In("/dev/null");
        foreach (string path in s_maskedSysPaths)
            steps.Add(new MaskStep(In(path), nullDevice) { Optional = true });
        foreach (string name in s_maskedProcPaths)
            steps.Add(new MaskStep(In("/proc/" + name), nullDevice) { Optional = true });
    }

    /// <summary>
    /// The sandbox's cgroup at /sys/fs/cgroup (<see cref="CgroupView"/>), read-only: docker and podman
    /// mount it so (cgroupns=private). The cgroup namespace was unshared first, once PID 1 was in the
    /// sandbox's cgroup (UnshareCgroupNamespaceStep), so these mounts are rooted there: the payload sees
    /// its own limits as the top of the tree and nothing above it. Read-only, because the sandbox's
    /// cgroup is the caller's to write (it made it), and root inside is the caller: through a writable
    /// mount the payload could raise its own memory.max. The mounts go on a tmpfs: at /sys in an
    /// image's or directory's root (empty in images; sysfs is not mounted there), at /sys/fs/cgroup in
    /// host mode, over the host's. There the tmpfs is needed even for cgroup2 alone: the kernel refuses
    /// a file system's second mount on a mount point where its own superblock is mounted already
    /// (EBUSY, fs/namespace.c do_add_mount, "Refuse the same filesystem on the same mount point"), and
    /// every cgroup2 mount shares one. A mount of a hierarchy lists after the host's in
    /// /proc/self/mountinfo, and readers take the last one (.NET's gc/unix/cgroup.cpp, FindHierarchyMount).
    /// </summary>
    private static void AddCgroupView(ImmutableArray<SetupStep>.Builder steps, CgroupView view, bool hostRoot)
    {
        const string CgroupDirectory = "/sys/fs/cgroup";
        const MountFlags CgroupFlags = MountFlags.ReadOnly | MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec;
        string holder = hostRoot ? CgroupDirectory : "/sys";
        // Host mode on v2: the cgroup2 mount covers the whole tmpfs, which can be read-only at once.
        bool holderCovered = hostRoot && view.Unified;
        steps.Add(new MountStep("tmpfs", In(holder), "tmpfs", TmpfsFlags | MountFlags.NoExec | (holderCovered ? MountFlags.ReadOnly : MountFlags.None), "mode=0755"));
        foreach (string dir in HostPaths.Ancestry(CgroupDirectory))
        {
            if (IsUnder(dir, holder) && dir != holder)
                steps.Add(new MakeDirectoryStep(In(dir)));
        }
        if (view.Unified)
        {
            steps.Add(new MountStep("cgroup2", In(CgroupDirectory), "cgroup2", CgroupFlags));
        }
        else
        {
            foreach (string hierarchy in view.V1Hierarchies)
            {
                string target = In(CgroupDirectory + "/" + hierarchy);
                steps.Add(new MakeDirectoryStep(target));
                steps.Add(new MountStep("cgroup", target, "cgroup", CgroupFlags, hierarchy));
            }
        }
        if (!holderCovered)
            steps.Add(new SetMountAttributesStep(In(holder), MountAttributes.ReadOnly, MountAttributes.None, Recursive: false));
    }

    // A loop, not LINQ, on the warm-start path.
    private static bool HasWritable(List<(string Source, string Target, bool ReadOnly, bool IsFile)> binds)
    {
        foreach (var bind in binds)
        {
            if (!bind.ReadOnly)
                return true;
        }
        return false;
    }

    internal static bool IsUnder(string path, string directory) =>
        path == directory || path.StartsWith(directory.TrimEnd('/') + "/", StringComparison.Ordinal);

    /// <summary>Whether <paramref name="path"/> is any of <paramref name="directories"/> or below one.</summary>
    internal static bool IsUnderAny(string path, IReadOnlyList<string> directories)
    {
        foreach (string directory in directories)
        {
            if (IsUnder(path, directory))
                return true;
        }
        return false;
    }

    private static (string Source, string Target, bool ReadOnly, bool IsFile) ResolveBind(BindMount bind, RootSpec root, List<string> freshMounts)
    {
        string hostPath = System.IO.Path.GetFullPath(bind.HostPath);
        PathKind kind = Syscalls.KindOf(hostPath);
        bool isFile = kind == PathKind.Other;
        if (kind == PathKind.Missing)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"bind mount source {bind.HostPath} does not exist: create it, or fix the path");
        string source = HostPaths.Resolve(hostPath);
        string target = HostPaths.Normalize(bind.SandboxPath);
        // In host mode the sandbox's tree is the host's: resolve symlinks the same way, or an absolute
        // link (/var/run -> /run) would be followed from the wrong root while mounting.
        // Not below a fresh tmpfs, though: there the host's files (and symlinks someone planted in the
        // shared /tmp) are hidden, and the target is created as given.
        if (root is HostRoot && !IsUnderAny(target, freshMounts))
            target = HostPaths.Resolve(target);
        return (source, target, bind.ReadOnly, isFile);
    }

    private static string ResolveExistingDirectory(string path, string what)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!Directory.Exists(full))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{what} {path} does not exist or is not a directory");
        return HostPaths.Resolve(full);
    }
}
