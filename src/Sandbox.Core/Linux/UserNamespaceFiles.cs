using Microsoft.Win32.SafeHandles;

namespace Sandbox.Linux;

/// <summary>An operation for <see cref="UserNamespaceFiles"/>: paths are relative to the operation list's root.</summary>
internal abstract record UserNamespaceFileOp(string Path);

/// <summary>lchown(<see cref="UserNamespaceFileOp.Path"/>, Uid, Gid) inside the namespace, then chmod to Mode's permission bits unless it is a symlink. Mode also carries the entry's type (S_IFMT), which must match.</summary>
internal sealed record ChownOp(string Path, uint Uid, uint Gid, uint Mode) : UserNamespaceFileOp(Path);

/// <summary>rm -rf of the path: never follows a symlink, never crosses a mount.</summary>
internal sealed record RemoveTreeOp(string Path) : UserNamespaceFileOp(Path);

/// <summary>What the child did: the index and errno of the failed operation (-1, 0 when none), and the bytes of regular files removed.</summary>
internal readonly record struct UserNamespaceFileResult(long FailedOp, int Error, long RemovedBytes, int WaitStatus)
{
    public bool Succeeded => FailedOp < 0 && WaitStatus == 0;
}

/// <summary>
/// A child in a new user namespace that runs file operations as that namespace's root (the native
/// executor's <c>sbx_file_spawn</c>; no managed code runs in it). Start it, write its id maps
/// (<see cref="Pid"/>), <see cref="Release"/> it, then <see cref="Wait"/>. Disposing kills and reaps
/// a child that was never waited for.
/// </summary>
internal sealed unsafe class UserNamespaceFiles : IDisposable
{
    private const ulong CLONE_NEWUSER = 0x10000000;
    private const long StackSize = 64 * 1024;
    private const long BufferSize = 2 * 4096 + 64 * 1024;

    private readonly NativeArena _arena;
    private readonly NativeFileArgs* _args;
    private SafeFileHandle? _sync;
    private int _pidfd;

    private UserNamespaceFiles(NativeArena arena, NativeFileArgs* args, int pid, int pidfd, SafeFileHandle sync)
    {
        _arena = arena;
        _args = args;
        Pid = pid;
        _pidfd = pidfd;
        _sync = sync;
    }

    /// <summary>The child's pid, for newuidmap/newgidmap.</summary>
    public int Pid { get; }

    public static UserNamespaceFiles Start(string root, IReadOnlyList<UserNamespaceFileOp> ops)
    {
        if (NativeExecutor.LoadError is string loadError)
            throw new InvalidOperationException(loadError);
        var arena = new NativeArena();
        SafeFileHandle? syncRead = null, syncWrite = null;
        try
        {
            NativeFileArgs* args = arena.Array<NativeFileArgs>(1);
            NativeFileOp* native = arena.Array<NativeFileOp>(ops.Count);
            for (int i = 0; i < ops.Count; i++)
            {
                native[i].Path = arena.String(ops[i].Path);
                switch (ops[i])
                {
                    case ChownOp c:
                        native[i].Kind = (int)NativeFileOpKind.Chown;
                        native[i].Uid = c.Uid;
                        native[i].Gid = c.Gid;
                        native[i].Mode = c.Mode;
                        break;
                    case RemoveTreeOp:
                        native[i].Kind = (int)NativeFileOpKind.RemoveTree;
                        break;
                    default:
                        throw new ArgumentException($"unknown file operation {ops[i].GetType().Name}");
                }
            }
            (syncRead, syncWrite) = Syscalls.CreatePipe();
            args->CloneFlags = CLONE_NEWUSER;
            args->Root = arena.String(root);
            args->Ops = native;
            args->OpCount = ops.Count;
            args->SyncFd = (int)syncRead.DangerousGetHandle();
            args->StackSize = StackSize;
            args->Stack = (byte*)arena.Allocate(StackSize, zero: false);
            args->BufferSize = BufferSize;
            args->Buffer = (byte*)arena.Allocate(BufferSize, zero: false);
            int pid = NativeExecutor.FileSpawn(args, out int pidfd);
            if (pid < 0)
                throw new LinuxException("clone (user namespace for the store's files)", root, -pid);
            syncRead.Dispose();
            return new UserNamespaceFiles(arena, args, pid, pidfd, syncWrite);
        }
        catch
        {
            syncRead?.Dispose();
            syncWrite?.Dispose();
            arena.Dispose();
            throw;
        }
    }

    /// <summary>Lets the child run its operations (call once its maps are written).</summary>
    public void Release()
    {
        if (_sync is null)
            return;
        bool written = Syscalls.WriteByte(_sync, 1);
        _sync.Dispose();
        _sync = null;
        if (!written)
            throw new LinuxException("write (releasing the user-namespace file child)", null, Errno.EPIPE);
    }

    /// <summary>Waits for the child to finish; its memory is freed on <see cref="Dispose"/>.</summary>
    public UserNamespaceFileResult Wait()
    {
        _sync?.Dispose(); // never released: the child sees EOF and exits
        _sync = null;
        if (_pidfd < 0)
            throw new InvalidOperationException("the child was reaped already");
        int rc = NativeExecutor.Wait(_pidfd, out int status, out _, out _);
        Tmds.Linux.LibC.close(_pidfd);
        _pidfd = -1;
        if (rc < 0)
            throw new LinuxException("waitid (user-namespace file child)", null, -rc);
        return new UserNamespaceFileResult(_args->FailedOp, _args->Error, _args->RemovedBytes, status);
    }

    public void Dispose()
    {
        _sync?.Dispose();
        _sync = null;
        if (_pidfd >= 0)
        {
            NativeExecutor.Kill(_pidfd, 9);
            NativeExecutor.Wait(_pidfd, out _, out _, out _);
            Tmds.Linux.LibC.close(_pidfd);
            _pidfd = -1;
        }
        // Only now: the child shared this memory (CLONE_VM) until it was reaped.
        _arena.Dispose();
    }
}
