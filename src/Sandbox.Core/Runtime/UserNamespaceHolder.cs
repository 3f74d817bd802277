using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;
using Sandbox.Storage;

namespace Sandbox.Runtime;

/// <summary>
/// Keeps a user namespace with the subordinate map alive between runs, so that a sandbox nests its
/// own user namespace in it and writes that one's maps itself, instead of running newuidmap and
/// newgidmap (two setuid programs, about 2 ms of every start). podman keeps its user namespace the
/// same way (its pause process); unlike podman's containers, every sandbox still gets a user
/// namespace of its own, so root in one sandbox has no capability over another's namespaces.
/// <para>
/// The holder is <c>sandbox-init --hold-userns</c> (sandbox_init.c): it listens on a socket in a
/// directory only its user can enter, hands the namespace to processes of that user, and exits once
/// idle. Whatever goes wrong here, the caller does without a holder (null), as before it existed;
/// only a malformed <see cref="IdleVariable"/> is an error.
/// </para>
/// <para>
/// Given the nested maps, the holder also makes the next sandbox's user namespace and network
/// namespace while no one waits (a spare, sandbox_init.c): a new network namespace is the slowest
/// part of a start (0.6 ms here). Each spare goes to one sandbox only. That is also why a single-id
/// map has a holder: its map needs no helper, but its sandboxes get spares the same way.
/// </para>
/// </summary>
internal static unsafe class UserNamespaceHolder
{
    /// <summary>Seconds a holder waits for the next sandbox before it exits; 0 turns holders off.</summary>
    public const string IdleVariable = "SANDBOX_USERNS_IDLE";
    internal const int DefaultIdleSeconds = 300;
    private const int MaxIdleSeconds = 7 * 86400;
    private const int HolderStackSize = 64 * 1024;
    private static readonly TimeSpan LockWait = TimeSpan.FromMilliseconds(500);
    // sockaddr_un.sun_path holds 108 bytes with the terminating NUL (unix(7)).
    private const int MaxSocketPath = 107;

    /// <summary>
    /// A user namespace that holds <paramref name="plan"/>'s map, from the running holder (with its
    /// spare, when it has one) or from one started now; null when holders are off or one cannot be had.
    /// A single-id map needs no setuid helper, so its holder is there for the spares alone.
    /// </summary>
    /// <remarks>
    /// <paramref name="request"/>, when given, is the connection <see cref="Request"/> made for this
    /// map earlier: the running holder's answer is taken from it, and without one (no holder, or an
    /// answer that fails its checks) this goes on as without it.
    /// </remarks>
    /// <param name="overlay">
    /// The overlay this run's plan mounts as its root (<see cref="OverlayHint"/>), told to the holder
    /// after the answer, so that its next spare comes with it mounted; null when the plan mounts none.
    /// </param>
    public static HeldUserNamespace? TryAcquire(IdMapPlan plan, HolderRequest? request = null, Func<string, string?>? env = null, string? overlay = null)
    {
        env ??= Environment.GetEnvironmentVariable;
        int idle = IdleSeconds(env);
        if (idle == 0)
            return null;
        string dir = SocketDirectoryPath(env, Syscalls.EffectiveUserId);
        string? socket = SocketPath(dir, plan);
        if (socket is null)
            return null;
        // What a holder hands over is checked (sbx_userns_verify) whoever made the socket, so the
        // directory is checked only before we put a socket there.
        if (request is { Connection: { } connection } && request.Plan == plan)
        {
            if (Receive(connection, overlay) is HeldUserNamespace answered)
                return answered;
        }
        else if (Fetch(socket) is HeldUserNamespace running)
        {
            return running;
        }
        if (!IsPrivateDirectory(dir, Syscalls.EffectiveUserId))
            return null;
        try
        {
            // One starter at a time: without the lock, two callers could each unlink the other's
            // fresh socket. The dir is ours alone (IsPrivateDirectory), so whatever sits at the path
            // (a stale socket, a stopped holder) may be replaced. Starting takes milliseconds: a lock
            // held longer belongs to a stopped process, and the run does without a holder.
            using FileLock? held = FileLock.TryAcquire(Path.Combine(dir, "userns.lock"), exclusive: true, LockWait);
            if (held is null)
                return null;
            if (Fetch(socket) is HeldUserNamespace started)
                return started;
            FileSystemCalls.Unlink(socket, directory: false);
            int listening = NativeExecutor.UserNamespaceListen(socket);
            if (listening < 0)
                return null;
            using var listener = new SafeFileHandle(listening, ownsHandle: true);
            return StartHolder(plan, listener, idle);
        }
        catch (Exception e) when (e is LinuxException or SandboxException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>What the holder listening at <paramref name="socket"/> hands over; null when none answers.</summary>
    internal static HeldUserNamespace? Fetch(string socket)
    {
        int fd = NativeExecutor.UserNamespaceFetch(socket, out NativeSpareFds spare, out string? overlay);
        return Held(fd, spare, overlay);
    }

    /// <summary>
    /// Asks the running holder of <paramref name="plan"/>'s map for its namespace now, for
    /// <see cref="TryAcquire"/> to take the answer later: the holder wakes up and answers while the
    /// caller plans the sandbox (the wake-up was most of a fetch's 150 µs on two CPUs). Null when
    /// holders are off; a request without a connection when none is running (TryAcquire starts one).
    /// </summary>
    /// <exception cref="SandboxException"><see cref="IdleVariable"/> is malformed.</exception>
    public static HolderRequest? Request(IdMapPlan plan, Func<string, string?>? env = null)
    {
        env ??= Environment.GetEnvironmentVariable;
        if (IdleSeconds(env) == 0 || SocketPath(SocketDirectoryPath(env, Syscalls.EffectiveUserId), plan) is not string socket)
            return null;
        int fd = NativeExecutor.UserNamespaceConnect(socket);
        return new HolderRequest(plan, fd >= 0 ? new SafeFileHandle(fd, ownsHandle: true) : null);
    }

    private static HeldUserNamespace? Receive(SafeFileHandle connection, string? overlayHint)
    {
        int fd = NativeExecutor.UserNamespaceReceive(connection, out NativeSpareFds spare, out string? overlay);
        // The holder reads one message after its answer (sandbox_init.c, "hinting"); closing without
        // one says the plan mounts no overlay. A failed write costs the next spare its overlay only.
        if (fd >= 0 && overlayHint is not null && System.Text.Encoding.UTF8.GetByteCount(overlayHint) <= NativeExecutor.OverlayHintSize)
            Syscalls.TryWrite(connection, System.Text.Encoding.UTF8.GetBytes(overlayHint));
        connection.Dispose();
        return Held(fd, spare, overlay);
    }

    private static HeldUserNamespace? Held(int fd, NativeSpareFds spare, string? overlay) => fd < 0
        ? null
        : new HeldUserNamespace(new SafeFileHandle(fd, ownsHandle: true), spare.User >= 0 ? new SpareNamespaces(spare, overlay) : null);

    /// <summary>
    /// The overlay a plan mounts as its root, as the holder keeps it: the directory its lower
    /// layers' names are relative to, the mount's data, and which directories the layers are
    /// (<see cref="MountStep.LowerIdentities"/>), each ending in a NUL (sandbox_init.c,
    /// mount_overlay replays the steps marked <see cref="SetupStep.OverlayPreparedBySpare"/> with the
    /// first two). Null when the plan has no such steps.
    /// </summary>
    public static string? OverlayHint(RuntimePlan plan)
    {
        string? directory = null, data = null, identities = null;
        foreach (SetupStep step in plan.Steps)
        {
            if (!step.OverlayPreparedBySpare)
                continue;
            if (step is ChangeDirectoryStep { Target: var path } && path != "/")
                directory = path;
            else if (step is MountStep { FileSystemType: "overlay", Data: var d } mount)
                (data, identities) = (d, mount.LowerIdentities);
        }
        return directory is null || data is null || string.IsNullOrEmpty(identities) ? null : $"{directory}\0{data}\0{identities}\0";
    }

    /// <summary>
    /// The map of a sandbox's user namespace nested in the holder's: the holder's ids one to one, in
    /// the holder's two extents, as each extent must lie within one extent of the parent's map
    /// (kernel/user_namespace.c, map_write(): map_id_range_down()).
    /// </summary>
    public static string NestedMap(IdRange subordinate) =>
        string.Create(CultureInfo.InvariantCulture, $"0 0 1\n1 1 {subordinate.Count}\n");

    /// <summary>
    /// The uid and gid maps of a sandbox's user namespace nested in the holder of <paramref name="plan"/>'s
    /// map: the held ids one to one (<see cref="NestedMap"/>); for a single-id map, its one id. That
    /// namespace inherits the held one's denied setgroups (kernel/user_namespace.c, create_user_ns()
    /// copies the parent's flags), as a single-id sandbox's own has always had.
    /// </summary>
    public static (string Uid, string Gid) NestedMaps(IdMapPlan plan) => plan.Kind switch
    {
        IdMapKind.SubordinateRange => (NestedMap(plan.SubordinateUids!), NestedMap(plan.SubordinateGids!)),
        _ => ("0 0 1\n", "0 0 1\n"),
    };

    /// <summary>The idle time <see cref="IdleVariable"/> gives (0: no holder), or the default when it is unset.</summary>
    /// <exception cref="SandboxException">The variable holds something else than such a number of seconds.</exception>
    internal static int IdleSeconds(Func<string, string?> env)
    {
        string? text = env(IdleVariable);
        if (string.IsNullOrEmpty(text))
            return DefaultIdleSeconds;
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int seconds) && seconds <= MaxIdleSeconds)
            return seconds;
        throw new SandboxException(SandboxErrorCode.InvalidSpec,
            $"{IdleVariable}={text} is not a number of seconds from 0 to {MaxIdleSeconds}: set how long the user-namespace holder waits for the next sandbox ({DefaultIdleSeconds} when unset), 0 to start no holder (then newuidmap runs for every sandbox with a subordinate range), or unset it");
    }

    /// <summary>
    /// The holder's socket in <paramref name="dir"/>: one per map (a changed /etc/subuid gets a new
    /// holder) and per executor ABI; null when the path is too long for a socket address.
    /// </summary>
    internal static string? SocketPath(string dir, IdMapPlan plan)
    {
        string key = plan.Kind == IdMapKind.SubordinateRange
            ? string.Create(CultureInfo.InvariantCulture,
                $"{NativeExecutor.ExpectedAbiVersion} {plan.HostUid} {plan.HostGid} {plan.SubordinateUids!.Start} {plan.SubordinateUids.Count} {plan.SubordinateGids!.Start} {plan.SubordinateGids.Count}")
            : string.Create(CultureInfo.InvariantCulture, $"{NativeExecutor.ExpectedAbiVersion} single {plan.HostUid} {plan.HostGid}");
        string path = Path.Combine(dir, $"userns-{StableHash.Fnv1aHex(key)}.sock");
        return Encoding.UTF8.GetByteCount(path) <= MaxSocketPath ? path : null;
    }

    /// <summary>$XDG_RUNTIME_DIR/sandbox, else $TMPDIR/sandbox-UID or /tmp/sandbox-UID (as tmux does).</summary>
    internal static string SocketDirectoryPath(Func<string, string?> env, uint uid)
    {
        if (env("XDG_RUNTIME_DIR") is { Length: > 0 } runtime && Path.IsPathRooted(runtime))
            return Path.Combine(runtime, "sandbox");
        return Path.Combine(env("TMPDIR") is { Length: > 0 } tmp && Path.IsPathRooted(tmp) ? tmp : "/tmp", $"sandbox-{uid}");
    }

    /// <summary>
    /// Makes <paramref name="dir"/> (0700) when missing; true when it is a real directory owned by
    /// <paramref name="uid"/> that no one else may enter: then no one else can put a socket there,
    /// and a sandbox (its own mount namespace) cannot reach it.
    /// </summary>
    internal static bool IsPrivateDirectory(string dir, uint uid)
    {
        try
        {
            using (SafeFileHandle parent = FileSystemCalls.OpenDirectory(Path.GetDirectoryName(dir)!))
                FileSystemCalls.MakeDirectoryAt(parent, Path.GetFileName(dir), 0x1C0 /* 0700 */);
            FileStatus? st = FileSystemCalls.TryLStat(dir);
            return st is { Kind: FileKind.Directory } s && s.Uid == uid && (s.Permissions & 0x3F) == 0;
        }
        catch (Exception e) when (e is LinuxException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>sandbox-init's arguments as a holder: its idle time, and the nested maps its spares get.</summary>
    internal static string[] HolderArguments(IdMapPlan plan, int idleSeconds)
    {
        var (uids, gids) = NestedMaps(plan);
        return ["sandbox-init", "--hold-userns", idleSeconds.ToString(CultureInfo.InvariantCulture), uids, gids];
    }

    private static HeldUserNamespace? StartHolder(IdMapPlan plan, SafeFileHandle listener, int idleSeconds)
    {
        using var arena = new NativeArena();
        var (syncRead, syncWrite) = Syscalls.CreatePipe();
        using (syncRead)
        using (syncWrite)
        {
            var (statusRead, statusWrite) = Syscalls.CreatePipe();
            using (statusRead)
            using (statusWrite)
            {
                int pid = SpawnStarter(arena, plan, syncRead, statusWrite, listener, idleSeconds, out int pidfd);
                if (pid < 0)
                    return null;
                // The starter has its own copies; ours must go, or the status pipe's EOF never comes.
                syncRead.Dispose();
                statusWrite.Dispose();
                return Release(plan, pid, pidfd, syncWrite, statusRead);
            }
        }
    }

    private static int SpawnStarter(NativeArena arena, IdMapPlan plan, SafeFileHandle syncRead, SafeFileHandle statusWrite, SafeFileHandle listener, int idleSeconds, out int pidfd)
    {
        using SafeFileHandle init = Syscalls.OpenReadOnly(NativeExecutor.InitPath);
        int copy = NativeExecutor.ExecutableCopy((int)init.DangerousGetHandle());
        using var executable = copy >= 0 ? new SafeFileHandle(copy, ownsHandle: true) : null;
        NativeHolderArgs* args = arena.Array<NativeHolderArgs>(1);
        args->SyncFd = (int)syncRead.DangerousGetHandle();
        args->StatusFd = (int)statusWrite.DangerousGetHandle();
        args->ListenFd = (int)listener.DangerousGetHandle();
        args->InitFd = (int)(executable ?? init).DangerousGetHandle();
        args->Argv = arena.StringArray(HolderArguments(plan, idleSeconds));
        args->StackSize = HolderStackSize;
        args->Stack = (byte*)arena.Allocate(2 * HolderStackSize, zero: false);
        return NativeExecutor.HolderSpawn(args, out pidfd);
    }

    // Places the starter, writes its maps, takes its namespace and lets it go; null if any of that fails.
    private static HeldUserNamespace? Release(IdMapPlan plan, int pid, int pidfd, SafeFileHandle syncWrite, SafeFileHandle statusRead)
    {
        SafeFileHandle? ns = null;
        bool execed = false;
        try
        {
            if (!Cgroups.CgroupManager.PlaceLongLivedProcess(pid, Cgroups.CgroupHost.Current))
                return null;
            IdMapWriter.Write(pid, plan);
            ns = Syscalls.OpenReadOnly($"/proc/{pid}/ns/user");
            // EOF on the status pipe: the holder has exec'd, and no longer uses our memory (its
            // starter, which cloned it and exited, closed its own copy).
            execed = Syscalls.WriteByte(syncWrite, 1) && Syscalls.Read(statusRead, stackalloc byte[4]) == 0;
            return execed ? new HeldUserNamespace(ns!, null) : null;
        }
        catch (Exception e) when (e is LinuxException or SandboxException)
        {
            return null;
        }
        finally
        {
            if (!execed)
            {
                ns?.Dispose();
                // One that never got as far as cloning the holder is killed.
                NativeExecutor.Kill(pidfd, 9);
            }
            // The starter exits once it has cloned the holder (which init adopts). Either way it is
            // gone before its stack (the arena) is freed.
            NativeExecutor.Wait(pidfd, out _, out _, out _);
            Tmds.Linux.LibC.close(pidfd);
        }
    }
}

/// <summary>
/// A connection to the holder of <see cref="Plan"/>'s map, made ahead (<see cref="UserNamespaceHolder.Request"/>);
/// <see cref="Connection"/> is null when no holder was listening. Disposing it unread leaves the
/// holder's spare with the holder when the answer was not sent yet, and closes it when it was.
/// </summary>
internal sealed class HolderRequest(IdMapPlan plan, SafeFileHandle? connection) : IDisposable
{
    public IdMapPlan Plan { get; } = plan;

    public SafeFileHandle? Connection { get; } = connection;

    public void Dispose() => Connection?.Dispose();
}

/// <summary>A holder's user namespace, and the spare it handed over with it, if any.</summary>
internal sealed class HeldUserNamespace(SafeFileHandle held, SpareNamespaces? spare) : IDisposable
{
    public SafeFileHandle Held { get; } = held;

    public SpareNamespaces? Spare { get; } = spare;

    public void Dispose()
    {
        Held.Dispose();
        Spare?.Dispose();
    }
}

/// <summary>
/// A spare: the next sandbox's user namespace, nested in the held one with its maps written, and
/// the network (loopback up), IPC and UTS namespaces it owns; with them, when the holder's mount
/// table is the caller's and has not changed since, a mount namespace already in the state every
/// plan starts from (the steps marked <see cref="SetupStep.PreparedBySpare"/>).
/// </summary>
internal sealed class SpareNamespaces(NativeSpareFds fds, string? overlay = null) : IDisposable
{
    /// <summary>The overlay its prepared mount namespace has mounted at /newroot (<see cref="UserNamespaceHolder.OverlayHint"/>), or null.</summary>
    public string? Overlay { get; } = fds.Mount >= 0 ? overlay : null;

    public SafeFileHandle User { get; } = new(fds.User, ownsHandle: true);

    public SafeFileHandle Network { get; } = new(fds.Network, ownsHandle: true);

    public SafeFileHandle Ipc { get; } = new(fds.Ipc, ownsHandle: true);

    public SafeFileHandle Uts { get; } = new(fds.Uts, ownsHandle: true);

    public SafeFileHandle? Mount { get; } = fds.Mount >= 0 ? new(fds.Mount, ownsHandle: true) : null;

    public void Dispose()
    {
        User.Dispose();
        Network.Dispose();
        Ipc.Dispose();
        Uts.Dispose();
        Mount?.Dispose();
    }
}
