using System.Runtime.InteropServices;

namespace Sandbox.Linux;

// Mirrors of the structures in Native/sandbox_exec.c. The layouts are checked against the C side at
// load time (sbx_op_size, sbx_args_size), so a mismatch fails loudly instead of corrupting memory.

internal enum NativeStepKind
{
    Mount = 1,
    MountSetAttr = 2,
    MakeDirectory = 3,
    Symlink = 4,
    CreateFile = 5,
    PivotRoot = 6,
    SetHostname = 7,
    LoopbackUp = 8,
    Unmount = 9,
    ClearGroups = 10,
    ChangeDirectory = 11,
    Unshare = 12,
    Run = 13,
    Mask = 14,
    BuildDev = 15,
}

[Flags]
internal enum NativeStepOptions
{
    None = 0,
    Optional = 1,
    Recursive = 2,
    PreparedBySpare = 4,
    OverlayPreparedBySpare = 8,
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeStep
{
    public int Kind;
    public int Options;
    public ulong Flags;
    public ulong Arg;
    public byte* Source;
    public byte* Target;
    public byte* FsType;
    public byte* Data;
    public byte* Root;
    public byte** Argv;
    public byte** Envp;
    public byte* Output;
}

[Flags]
internal enum NativeSpawnFlags
{
    None = 0,
    NoNewPrivileges = 1,
    NewSession = 2,
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeSpawnArgs
{
    public ulong CloneFlags;
    public NativeStep* Steps;
    public int StepCount;
    public int Flags;
    public byte* File;
    public byte** Argv;
    public byte** Envp;
    public byte* SearchPath;
    public byte* WorkingDirectory;
    public int StdinFd, StdoutFd, StderrFd;
    public int SyncFd;
    public int ReportFd;
    public int LifeFd;
    public byte* Stack;
    public ulong StackSize;
    public byte* PathBuffer;
    public ulong PathBufferSize;
    public int Uid;
    public int Gid;
    public int InitFd;
    public int GoFd;
    public int GoWriteFd;
    public int StatusFd;
    public ulong KeepCapabilities;
    public int LastCapability;
    public uint SeccompLength;
    public void* SeccompFilter;
    public int UserNamespaceFd;
    public int JoinError;
    public int JoinedPid;
    public int JoinedPidfd;
    public byte* NestedUidMap;
    public byte* NestedGidMap;
    public int SpareUserNamespaceFd;
    public int SpareNetworkNamespaceFd;
    public int SpareJoined;
    public int SpareIpcNamespaceFd;
    public int SpareUtsNamespaceFd;
    public int SpareMountNamespaceFd;
    public int MountPrepared;
    public int OverlayPrepared;
}

/// <summary>The fds of a holder's spare as sbx_userns_receive hands them over (SBX_SPARE_*), -1 each when there is none.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct NativeSpareFds
{
    public int User;
    public int Network;
    public int Ipc;
    public int Uts;
    /// <summary>The prepared mount namespace; -1 when the spare came without one.</summary>
    public int Mount;
    /// <summary>The length of the overlay the prepared mount namespace has mounted (<see cref="NativeExecutor.OverlayHintSize"/>), 0 when none.</summary>
    public int OverlayLength;

    public static NativeSpareFds None => new() { User = -1, Network = -1, Ipc = -1, Uts = -1, Mount = -1 };
}

/// <summary>struct sbx_holder_args: the holder of a user namespace, before it execs.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeHolderArgs
{
    public int SyncFd;
    public int StatusFd;
    public int ListenFd;
    public int InitFd;
    public byte** Argv;
    public byte* Stack;
    public ulong StackSize;
}

internal enum NativeReportKind
{
    SetupFailed = 1,
    ExecFailed = 2,
    Started = 3,
    Exited = 4,
}

[StructLayout(LayoutKind.Sequential)]
internal struct NativeReport
{
    public int Kind;
    public int Step;
    public int Error;
    public int Value;
    public long UserMicroseconds;
    public long SystemMicroseconds;
}

internal enum NativeFileOpKind
{
    Chown = 1,
    RemoveTree = 2,
}

/// <summary>struct sbx_file_op: one operation of the user-namespace file child (sandbox_exec.c).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeFileOp
{
    public int Kind;
    public uint Mode;
    public uint Uid;
    public uint Gid;
    public byte* Path;
}

/// <summary>struct sbx_file_args.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeFileArgs
{
    public ulong CloneFlags;
    public byte* Root;
    public NativeFileOp* Ops;
    public long OpCount;
    public int SyncFd;
    public int Reserved;
    public byte* Stack;
    public ulong StackSize;
    public byte* Buffer;
    public ulong BufferSize;
    public long FailedOp;
    public int Error;
    public int Reserved2;
    public long RemovedBytes;
}

internal static unsafe partial class NativeExecutor
{
    public const string LibraryName = "libsandbox_exec.so";
    internal const int ExpectedAbiVersion = 17;

    /// <summary>
    /// The executor's entry points, bound with dlsym (NativeLibrary) on first use: from the executable
    /// itself when it has them (the NativeAOT CLI links the executor in: Sandbox.Cli.csproj), else
    /// from libsandbox_exec.so, loaded from the directory this assembly ships in. Not
    /// [LibraryImport]: the runtime resolves those lazily through its probing logic, which reads the
    /// assembly's DllImportSearchPath attributes by reflection (~0.25 ms of a NativeAOT warm start in perf).
    /// </summary>
    private static class Exports
    {
        public static readonly nint Library = Bind();
        public static readonly delegate* unmanaged<int> AbiVersion = (delegate* unmanaged<int>)Get("sbx_abi_version");
        public static readonly delegate* unmanaged<int> OpSize = (delegate* unmanaged<int>)Get("sbx_op_size");
        public static readonly delegate* unmanaged<int> ArgsSize = (delegate* unmanaged<int>)Get("sbx_args_size");
        public static readonly delegate* unmanaged<int> FileOpSize = (delegate* unmanaged<int>)Get("sbx_file_op_size");
        public static readonly delegate* unmanaged<int> FileArgsSize = (delegate* unmanaged<int>)Get("sbx_file_args_size");
        public static readonly delegate* unmanaged<NativeFileArgs*, int*, int> FileSpawn = (delegate* unmanaged<NativeFileArgs*, int*, int>)Get("sbx_file_spawn");
        public static readonly delegate* unmanaged<NativeSpawnArgs*, int*, int> Spawn = (delegate* unmanaged<NativeSpawnArgs*, int*, int>)Get("sbx_spawn");
        public static readonly delegate* unmanaged<int, int*, long*, long*, int> Wait = (delegate* unmanaged<int, int*, long*, long*, int>)Get("sbx_wait");
        public static readonly delegate* unmanaged<int, int, int> Kill = (delegate* unmanaged<int, int, int>)Get("sbx_pidfd_kill");
        public static readonly delegate* unmanaged<int> HolderArgsSize = (delegate* unmanaged<int>)Get("sbx_holder_args_size");
        public static readonly delegate* unmanaged<NativeHolderArgs*, int*, int> HolderSpawn = (delegate* unmanaged<NativeHolderArgs*, int*, int>)Get("sbx_holder_spawn");
        public static readonly delegate* unmanaged<int> DeferTeardown = (delegate* unmanaged<int>)Get("sbx_defer_teardown");
        public static readonly delegate* unmanaged<int*, int, int> SignalsForward = (delegate* unmanaged<int*, int, int>)Get("sbx_signals_forward");
        public static readonly delegate* unmanaged<int*, int, void> SignalsRestore = (delegate* unmanaged<int*, int, void>)Get("sbx_signals_restore");
        public static readonly delegate* unmanaged<int, int> ExecutableCopy = (delegate* unmanaged<int, int>)Get("sbx_executable_copy");
        public static readonly delegate* unmanaged<byte*, int> UserNamespaceListen = (delegate* unmanaged<byte*, int>)Get("sbx_userns_listen");
        public static readonly delegate* unmanaged<byte*, NativeSpareFds*, byte*, int> UserNamespaceFetch = (delegate* unmanaged<byte*, NativeSpareFds*, byte*, int>)Get("sbx_userns_fetch");
        public static readonly delegate* unmanaged<byte*, int> UserNamespaceConnect = (delegate* unmanaged<byte*, int>)Get("sbx_userns_connect");
        public static readonly delegate* unmanaged<int, NativeSpareFds*, byte*, int> UserNamespaceReceive = (delegate* unmanaged<int, NativeSpareFds*, byte*, int>)Get("sbx_userns_receive");
        public static readonly delegate* unmanaged<int, int> UserNamespaceVerify = (delegate* unmanaged<int, int>)Get("sbx_userns_verify");
        public static readonly delegate* unmanaged<int, byte**, byte***, int*, byte*, int, void> RunHelpers =
            (delegate* unmanaged<int, byte**, byte***, int*, byte*, int, void>)Get("sbx_run_helpers");

        private static nint Get(string name) => NativeLibrary.GetExport(Library, name);

        private static nint Bind()
        {
            nint self = NativeLibrary.GetMainProgramHandle();
            return NativeLibrary.TryGetExport(self, "sbx_abi_version", out _) ? self : NativeLibrary.Load(Path.Combine(Directory, LibraryName));
        }
    }

    /// <summary>Where the executor and sandbox-init ship: next to the app (the CLI, or a test host).</summary>
    private static string Directory => Runtime.ProgramDirectory.Path;

    private static int AbiVersion() => Exports.AbiVersion();

    private static int StepSize() => Exports.OpSize();

    private static int ArgsSize() => Exports.ArgsSize();

    private static int FileOpSize() => Exports.FileOpSize();

    private static int FileArgsSize() => Exports.FileArgsSize();

    public static int FileSpawn(NativeFileArgs* args, out int pidfd)
    {
        int fd = -1;
        int rc = Exports.FileSpawn(args, &fd);
        pidfd = fd;
        return rc;
    }

    public static int Spawn(NativeSpawnArgs* args, out int pidfd)
    {
        int fd = -1;
        int rc = Exports.Spawn(args, &fd);
        pidfd = fd;
        return rc;
    }

    public static int Wait(int pidfd, out int status, out long userMicroseconds, out long systemMicroseconds)
    {
        int st = 0;
        long user = 0, system = 0;
        int rc = Exports.Wait(pidfd, &st, &user, &system);
        (status, userMicroseconds, systemMicroseconds) = (st, user, system);
        return rc;
    }

    public static int Kill(int pidfd, int signal) => Exports.Kill(pidfd, signal);

    public static int HolderSpawn(NativeHolderArgs* args, out int pidfd)
    {
        int fd = -1;
        int rc = Exports.HolderSpawn(args, &fd);
        pidfd = fd;
        return rc;
    }

    /// <summary>A sealed memfd copy of the executable open at <paramref name="fd"/>, or -errno.</summary>
    public static int ExecutableCopy(int fd) => Exports.ExecutableCopy(fd);

    /// <summary>
    /// Makes the child that unmaps this process's memory after its exit (sandbox_exec.c,
    /// sbx_defer_teardown): its pid, or -errno. Once per process; it waits for this process's exit.
    /// </summary>
    public static int DeferTeardown() => LoadError is null ? Exports.DeferTeardown() : -38 /* ENOSYS */;

    /// <summary>
    /// Makes <paramref name="signals"/> write their numbers into a pipe instead of taking their action
    /// (sandbox_exec.c, sbx_signals_forward): the pipe's read end, which the caller must not close,
    /// or -errno. Undone by <see cref="RestoreSignals"/>.
    /// </summary>
    public static int ForwardSignals(ReadOnlySpan<int> signals)
    {
        fixed (int* p = signals)
            return Exports.SignalsForward(p, signals.Length);
    }

    /// <summary>Gives <paramref name="signals"/> back the actions they had before <see cref="ForwardSignals"/>.</summary>
    public static void RestoreSignals(ReadOnlySpan<int> signals)
    {
        fixed (int* p = signals)
            Exports.SignalsRestore(p, signals.Length);
    }

    /// <summary>A listening socket at <paramref name="path"/>, or -errno.</summary>
    public static int UserNamespaceListen(string path)
    {
        using var arena = new NativeArena();
        return Exports.UserNamespaceListen(arena.String(path));
    }

    /// <summary>
    /// The user namespace a holder at <paramref name="path"/> hands over, verified; or -errno. With it,
    /// the spare's user, network, IPC and UTS namespaces when the holder had one and it passed the
    /// check, else -1 each.
    /// </summary>
    public static int UserNamespaceFetch(string path, out NativeSpareFds spare, out string? overlay)
    {
        using var arena = new NativeArena();
        NativeSpareFds fds = NativeSpareFds.None;
        byte* hint = (byte*)arena.Allocate(OverlayHintSize, zero: false);
        int rc = Exports.UserNamespaceFetch(arena.String(path), &fds, hint);
        spare = fds;
        overlay = OverlayOf(fds, hint);
        return rc;
    }

    /// <summary>The most a holder says of the overlay a spare has mounted (sandbox_exec.c, SBX_OVERLAY_HINT_SIZE).</summary>
    public const int OverlayHintSize = 8192;

    // "DIRECTORY\0DATA\0" as the holder sent it, or null.
    private static string? OverlayOf(NativeSpareFds fds, byte* hint) =>
        fds.Mount >= 0 && fds.OverlayLength is > 0 and <= OverlayHintSize ? System.Text.Encoding.UTF8.GetString(hint, fds.OverlayLength) : null;

    /// <summary>A socket connected to the holder at <paramref name="path"/>, whose answer <see cref="UserNamespaceReceive"/> reads; or -errno.</summary>
    public static int UserNamespaceConnect(string path)
    {
        using var arena = new NativeArena();
        return Exports.UserNamespaceConnect(arena.String(path));
    }

    /// <summary>What the holder connected at <paramref name="connection"/> hands over, as <see cref="UserNamespaceFetch"/> returns it.</summary>
    public static int UserNamespaceReceive(SafeHandle connection, out NativeSpareFds spare, out string? overlay)
    {
        using var arena = new NativeArena();
        NativeSpareFds fds = NativeSpareFds.None;
        byte* hint = (byte*)arena.Allocate(OverlayHintSize, zero: false);
        int rc = Exports.UserNamespaceReceive((int)connection.DangerousGetHandle(), &fds, hint);
        spare = fds;
        overlay = OverlayOf(fds, hint);
        return rc;
    }

    /// <summary>0 when <paramref name="fd"/> is a user namespace a holder of ours may offer, else -errno.</summary>
    public static int UserNamespaceVerify(int fd) => Exports.UserNamespaceVerify(fd);

    private static void RunHelpersNative(int count, byte** files, byte*** argvs, int* statuses, byte* errors, int errorSize) =>
        Exports.RunHelpers(count, files, argvs, statuses, errors, errorSize);

    /// <summary>
    /// Runs helper programs side by side (posix_spawnp, PATH search for bare names) and waits for all:
    /// per helper, its wait status (or -errno when it could not start) and the start of its stderr.
    /// </summary>
    public static (int Status, string Stderr)[] RunHelpers(IReadOnlyList<(string File, IReadOnlyList<string> Arguments)> helpers)
    {
        const int ErrorSize = 1024;
        using var arena = new NativeArena();
        int n = helpers.Count;
        byte** files = (byte**)arena.Array<nint>(n);
        byte*** argvs = (byte***)arena.Array<nint>(n);
        for (int i = 0; i < n; i++)
        {
            files[i] = arena.String(helpers[i].File);
            byte** argv = (byte**)arena.Array<nint>(helpers[i].Arguments.Count + 2);
            argv[0] = arena.String(Path.GetFileName(helpers[i].File));
            for (int j = 0; j < helpers[i].Arguments.Count; j++)
                argv[j + 1] = arena.String(helpers[i].Arguments[j]);
            argv[helpers[i].Arguments.Count + 1] = null;
            argvs[i] = argv;
        }
        int* statuses = arena.Array<int>(n);
        byte* errors = (byte*)arena.Allocate(n * ErrorSize, zero: true);
        RunHelpersNative(n, files, argvs, statuses, errors, ErrorSize);
        var results = new (int, string)[n];
        for (int i = 0; i < n; i++)
            results[i] = (statuses[i], System.Runtime.InteropServices.Marshal.PtrToStringUTF8((nint)(errors + i * ErrorSize)) ?? "");
        return results;
    }

    /// <summary>The static init program every sandbox's PID 1 becomes; it ships next to the executor.</summary>
    public static string InitPath => Path.Combine(Directory, "sandbox-init");

    private static readonly Lazy<string?> s_loadError = new(CheckLoad);

    /// <summary>Null when the executor is loaded and matches this build; otherwise why not.</summary>
    public static string? LoadError => s_loadError.Value;

    private static string? CheckLoad()
    {
        try
        {
            if (AbiVersion() != ExpectedAbiVersion)
                return $"{LibraryName} has ABI version {AbiVersion()}, this build needs {ExpectedAbiVersion}: rebuild the project";
            if (StepSize() != sizeof(NativeStep) || ArgsSize() != sizeof(NativeSpawnArgs) ||
                FileOpSize() != sizeof(NativeFileOp) || FileArgsSize() != sizeof(NativeFileArgs) ||
                Exports.HolderArgsSize() != sizeof(NativeHolderArgs))
                return $"{LibraryName} was built for other structure layouts: rebuild the project";
            if (!File.Exists(InitPath))
                return $"{InitPath} is missing: it is built by `dotnet build` (gcc -static) and must sit next to the sandbox binary";
            return null;
        }
        catch (TypeInitializationException e) when (e.InnerException is DllNotFoundException missing)
        {
            return $"the native executor {LibraryName} could not be loaded ({missing.Message}); it is built by `dotnet build` with the system C compiler and must sit next to the sandbox binary";
        }
        catch (TypeInitializationException e) when (e.InnerException is EntryPointNotFoundException stale)
        {
            return $"{LibraryName} is from another version ({stale.Message}): rebuild the project";
        }
    }
}
