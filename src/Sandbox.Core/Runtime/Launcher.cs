using System.Collections.Immutable;
using System.Diagnostics;
using Microsoft.Win32.SafeHandles;
using Sandbox.Diagnostics;
using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>The stdio the payload gets: fds the launcher dups into 0, 1 and 2 of the payload.</summary>
internal sealed record StdioPlan(SafeFileHandle Stdin, SafeFileHandle Stdout, SafeFileHandle Stderr);

/// <summary>
/// Executes a <see cref="RuntimePlan"/>: marshals it into native memory, has the native executor
/// clone PID 1, writes the id maps from the parent side, and releases the child (DESIGN.md,
/// "Process creation").
/// </summary>
internal static unsafe class Launcher
{
    private const long StackSize = 256 * 1024;
    private const int PathBufferSize = 4096;
    /// <summary>How much of a set-up program's stderr is kept for the error message.</summary>
    internal const int ProgramOutputSize = 2048;

    private const ulong CLONE_NEWNS = 0x00020000;
    private const ulong CLONE_NEWCGROUP = 0x02000000;
    private const ulong CLONE_NEWUTS = 0x04000000;
    private const ulong CLONE_NEWIPC = 0x08000000;
    private const ulong CLONE_NEWUSER = 0x10000000;
    private const ulong CLONE_NEWPID = 0x20000000;
    private const ulong CLONE_NEWNET = 0x40000000;

    /// <param name="holderRequest">The holder's answer for <paramref name="plan"/>'s id maps, asked for ahead (<see cref="UserNamespaceHolder.Request"/>).</param>
    public static SandboxProcess Start(RuntimePlan plan, StdioPlan stdio, Action<int>? beforeRelease = null, HolderRequest? holderRequest = null)
    {
        if (NativeExecutor.LoadError is string loadError)
            throw new SandboxException(SandboxErrorCode.NativeExecutorUnavailable, loadError);

        var arena = new NativeArena();
        SafeFileHandle? syncRead = null, syncWrite = null, reportRead = null, reportWrite = null, lifeRead = null, lifeWrite = null, init = null;
        int pidfd = -1;
        SandboxProcess? process = null;
        try
        {
            (syncRead, syncWrite) = Syscalls.CreatePipe();
            (reportRead, reportWrite) = Syscalls.CreatePipe();
            (lifeRead, lifeWrite) = Syscalls.CreatePipe();
            init = Syscalls.OpenPath(NativeExecutor.InitPath);

            NativeSpawnArgs* args = arena.Array<NativeSpawnArgs>(1);
            var outputs = new Dictionary<int, IntPtr>();
            Marshal(plan, arena, args, outputs);
            args->StdinFd = (int)stdio.Stdin.DangerousGetHandle();
            args->StdoutFd = (int)stdio.Stdout.DangerousGetHandle();
            args->StderrFd = (int)stdio.Stderr.DangerousGetHandle();
            args->SyncFd = (int)syncRead.DangerousGetHandle();
            args->ReportFd = (int)reportWrite.DangerousGetHandle();
            args->LifeFd = (int)lifeRead.DangerousGetHandle();
            args->InitFd = (int)init.DangerousGetHandle();
            args->StackSize = StackSize;
            args->Stack = arena.ChildStack(2 * StackSize);
            args->PathBufferSize = PathBufferSize;
            args->PathBuffer = (byte*)arena.Allocate(PathBufferSize, zero: false);

            var started = Stopwatch.GetTimestamp();
            bool mapsWritten = false;
            int pid;
            string? overlayHint = UserNamespaceHolder.OverlayHint(plan);
            using (HeldUserNamespace? held = AcquireHeldUserNamespace(plan, holderRequest, overlayHint))
            {
                WithoutHeldNamespace(args);
                if (held is not null)
                {
                    args->UserNamespaceFd = (int)held.Held.DangerousGetHandle();
                    var (uids, gids) = UserNamespaceHolder.NestedMaps(plan.IdMaps);
                    args->NestedUidMap = arena.String(uids);
                    args->NestedGidMap = arena.String(gids);
                    if (held.Spare is { } spare)
                    {
                        args->SpareUserNamespaceFd = (int)spare.User.DangerousGetHandle();
                        args->SpareNetworkNamespaceFd = (int)spare.Network.DangerousGetHandle();
                        args->SpareIpcNamespaceFd = (int)spare.Ipc.DangerousGetHandle();
                        args->SpareUtsNamespaceFd = (int)spare.Uts.DangerousGetHandle();
                        var (use, overlayPrepared) = PreparedMountUse(spare.Mount is not null, StartsPrepared(plan), spare.Overlay, overlayHint);
                        args->SpareMountNamespaceFd = use ? (int)spare.Mount!.DangerousGetHandle() : -1;
                        args->OverlayPrepared = overlayPrepared ? 1 : 0;
                    }
                }
                pid = NativeExecutor.Spawn(args, out pidfd);
                mapsWritten = held is not null && pid > 0;
                if (pid < 0 && held is not null)
                {
                    // Do without the holder: the way that needs none reports any failure it shares.
                    WithoutHeldNamespace(args);
                    pid = NativeExecutor.Spawn(args, out pidfd);
                }
            }
            if (pid < 0)
                throw CloneFailed(-pid, plan.Namespaces);

            // The child holds its own copies now; ours must go, or EOF would never come.
            syncRead.Dispose();
            reportWrite.Dispose();
            lifeRead.Dispose();
            init.Dispose();

            process = new SandboxProcess(pid, pidfd, arena, reportRead, lifeWrite, plan, started, outputs);
            pidfd = -1;
            try
            {
                if (!mapsWritten)
                    IdMapWriter.Write(pid, plan.IdMaps);
                beforeRelease?.Invoke(pid);
                if (!Syscalls.WriteByte(syncWrite, 1))
                    throw new SandboxException(SandboxErrorCode.SpawnFailed, "the sandbox's init process exited before it was released");
            }
            catch (SandboxException) when (process.FailureBeforeRelease() is SandboxException reported)
            {
                // PID 1 failed on its own meanwhile (its network namespace), and said why.
                throw reported;
            }
            syncWrite.Dispose();
            return process;
        }
        catch
        {
            syncRead?.Dispose();
            syncWrite?.Dispose();
            reportWrite?.Dispose();
            lifeRead?.Dispose();
            init?.Dispose();
            if (process is not null)
            {
                // Owns the arena, the pidfd and our pipe ends: kill, reap, free.
                process.Kill();
                process.WaitForExit();
                process.Dispose();
            }
            else
            {
                reportRead?.Dispose();
                lifeWrite?.Dispose();
                if (pidfd >= 0)
                {
                    NativeExecutor.Kill(pidfd, 9);
                    NativeExecutor.Wait(pidfd, out _, out _, out _);
                    Tmds.Linux.LibC.close(pidfd);
                }
                arena.Dispose();
            }
            throw;
        }
    }

    private static void WithoutHeldNamespace(NativeSpawnArgs* args)
    {
        args->UserNamespaceFd = -1;
        args->SpareUserNamespaceFd = -1;
        args->SpareNetworkNamespaceFd = -1;
        args->SpareIpcNamespaceFd = -1;
        args->SpareUtsNamespaceFd = -1;
        args->SpareMountNamespaceFd = -1;
        args->OverlayPrepared = 0;
    }

    /// <summary>
    /// Whether PID 1 joins a spare's prepared mount namespace, and whether the overlay mounted in it
    /// is this plan's root. Only a plan that starts where the prepared namespace stands (the
    /// RootfsPlanner's) joins; a helper's plan of its own expects a plain copy of our mounts. One
    /// with another overlay mounted holds the upper and work directories this plan's overlay wants:
    /// that plan goes without it. A plan that mounts no overlay stacks its root over the mounted one,
    /// which the final pivot drops with the rest of the scratch root.
    /// </summary>
    internal static (bool Use, bool OverlayPrepared) PreparedMountUse(bool spareHasMount, bool planStartsPrepared, string? spareOverlay, string? planOverlay)
    {
        bool matches = spareOverlay is not null && spareOverlay == planOverlay;
        bool use = spareHasMount && planStartsPrepared && (spareOverlay is null || planOverlay is null || matches);
        return (use, use && matches);
    }

    private static bool StartsPrepared(RuntimePlan plan)
    {
        foreach (SetupStep step in plan.Steps)
        {
            if (step.PreparedBySpare)
                return true;
        }
        return false;
    }

    // The maps come from a held user namespace when one can be had: PID 1 gets a user namespace
    // nested in it, whose maps the executor writes (for a subordinate range: no newuidmap or
    // newgidmap); or the holder's spare, made ahead of time with its network namespace.
    private static HeldUserNamespace? AcquireHeldUserNamespace(RuntimePlan plan, HolderRequest? request, string? overlayHint) =>
        plan.Namespaces.HasFlag(NamespaceSet.User) ? UserNamespaceHolder.TryAcquire(plan.IdMaps, request, overlay: overlayHint) : null;

    // Once a SandboxProcess exists it owns the arena and frees it after reaping PID 1.
    private static void Marshal(RuntimePlan plan, NativeArena arena, NativeSpawnArgs* args, Dictionary<int, IntPtr> outputs)
    {
        args->CloneFlags = CloneFlags(plan.Namespaces);
        ImmutableArray<SetupStep> steps = plan.Steps;
        NativeStep* native = arena.Array<NativeStep>(steps.Length);
        for (int i = 0; i < steps.Length; i++)
        {
            native[i] = ToNative(steps[i], arena);
            if (native[i].Output is not null)
                outputs[i] = (IntPtr)native[i].Output;
        }
        args->Steps = native;
        args->StepCount = steps.Length;

        ProcessPlan p = plan.Process;
        var flags = NativeSpawnFlags.None;
        if (p.NoNewPrivileges)
            flags |= NativeSpawnFlags.NoNewPrivileges;
        if (p.NewSession)
            flags |= NativeSpawnFlags.NewSession;
        args->Flags = (int)flags;
        args->File = arena.String(p.File);
        args->Argv = arena.StringArray(p.Arguments);
        args->Envp = arena.StringArray(p.Environment);
        args->SearchPath = arena.String(p.SearchPath);
        args->WorkingDirectory = arena.String(p.WorkingDirectory);
        args->Uid = p.Uid ?? -1;
        args->Gid = p.Gid ?? -1;
        args->LastCapability = p.CapabilityBoundingSet is null ? -1 : p.LastCapability;
        args->KeepCapabilities = p.CapabilityBoundingSet ?? ~0UL;
        if (!p.SeccompProgram.IsDefaultOrEmpty)
        {
            ulong* program = arena.Array<ulong>(p.SeccompProgram.Length);
            for (int i = 0; i < p.SeccompProgram.Length; i++)
                program[i] = p.SeccompProgram[i];
            args->SeccompFilter = program;
            args->SeccompLength = (uint)p.SeccompProgram.Length;
        }
    }

    internal static ulong CloneFlags(NamespaceSet ns)
    {
        ulong flags = 0;
        if (ns.HasFlag(NamespaceSet.User)) flags |= CLONE_NEWUSER;
        if (ns.HasFlag(NamespaceSet.Mount)) flags |= CLONE_NEWNS;
        if (ns.HasFlag(NamespaceSet.Pid)) flags |= CLONE_NEWPID;
        if (ns.HasFlag(NamespaceSet.Network)) flags |= CLONE_NEWNET;
        if (ns.HasFlag(NamespaceSet.Uts)) flags |= CLONE_NEWUTS;
        if (ns.HasFlag(NamespaceSet.Ipc)) flags |= CLONE_NEWIPC;
        // No CLONE_NEWCGROUP here: PID 1 is moved into the sandbox's cgroup after clone, so it
        // unshares its cgroup namespace itself once released (UnshareStep), rooting the namespace there.
        return flags;
    }

    private static NativeStep ToNative(SetupStep step, NativeArena arena)
    {
        var n = new NativeStep
        {
            Options = (step.Optional ? (int)NativeStepOptions.Optional : 0) | (step.PreparedBySpare ? (int)NativeStepOptions.PreparedBySpare : 0) |
                      (step.OverlayPreparedBySpare ? (int)NativeStepOptions.OverlayPreparedBySpare : 0),
        };
        switch (step)
        {
            case MountStep m:
                n.Kind = (int)NativeStepKind.Mount;
                n.Source = arena.String(m.Source);
                n.Target = arena.String(m.Target);
                n.FsType = arena.String(m.FileSystemType);
                n.Flags = (ulong)m.Flags;
                n.Data = arena.String(m.Data);
                break;
            case SetMountAttributesStep a:
                n.Kind = (int)NativeStepKind.MountSetAttr;
                n.Target = arena.String(a.Target);
                n.Flags = (ulong)a.Set;
                n.Arg = (ulong)a.Clear;
                if (a.Recursive)
                    n.Options |= (int)NativeStepOptions.Recursive;
                break;
            case MakeDirectoryStep d:
                n.Kind = (int)NativeStepKind.MakeDirectory;
                n.Target = arena.String(d.Target);
                n.Arg = (ulong)d.Mode;
                break;
            case SymlinkStep s:
                n.Kind = (int)NativeStepKind.Symlink;
                n.Source = arena.String(s.LinkTarget);
                n.Target = arena.String(s.Path);
                break;
            case CreateFileStep f:
                n.Kind = (int)NativeStepKind.CreateFile;
                n.Target = arena.String(f.Target);
                n.Arg = (ulong)f.Mode;
                break;
            case PivotRootStep r:
                n.Kind = (int)NativeStepKind.PivotRoot;
                n.Target = arena.String(r.NewRoot);
                n.Source = arena.String(r.PutOld);
                break;
            case SetHostnameStep h:
                n.Kind = (int)NativeStepKind.SetHostname;
                n.Source = arena.String(h.Hostname);
                break;
            case LoopbackUpStep:
                n.Kind = (int)NativeStepKind.LoopbackUp;
                break;
            case BuildDevStep:
                n.Kind = (int)NativeStepKind.BuildDev;
                break;
            case UnmountStep u:
                n.Kind = (int)NativeStepKind.Unmount;
                n.Target = arena.String(u.Target);
                break;
            case ClearGroupsStep:
                n.Kind = (int)NativeStepKind.ClearGroups;
                break;
            case ChangeDirectoryStep c:
                n.Kind = (int)NativeStepKind.ChangeDirectory;
                n.Target = arena.String(c.Target);
                break;
            case UnshareCgroupNamespaceStep:
                n.Kind = (int)NativeStepKind.Unshare;
                n.Flags = CLONE_NEWCGROUP;
                break;
            case MaskStep k:
                n.Kind = (int)NativeStepKind.Mask;
                n.Source = arena.String(k.NullDevice);
                n.Target = arena.String(k.Target);
                break;
            case RunProgramStep r:
                n.Kind = (int)NativeStepKind.Run;
                n.Source = arena.String(r.Program);
                n.Argv = arena.StringArray(r.Arguments);
                n.Envp = arena.StringArray(r.Environment);
                n.Output = (byte*)arena.Allocate(ProgramOutputSize, zero: true);
                n.Arg = ProgramOutputSize;
                break;
            default:
                throw new ArgumentException($"unknown set-up step {step.GetType().Name}");
        }
        if (step.ResolveIn is string root)
        {
            string target = step.TargetPath ?? throw new ArgumentException($"{step.Describe()}: cannot be resolved in a root");
            string prefix = root.TrimEnd('/') + "/";
            if (!target.StartsWith(prefix, StringComparison.Ordinal))
                throw new ArgumentException($"{step.Describe()}: {target} is not under {root}");
            n.Root = arena.String(root);
            n.Target = arena.String(target[prefix.Length..]);
        }
        return n;
    }

    private static SandboxException CloneFailed(int errno, NamespaceSet namespaces)
    {
        string cause = Errno.Describe(errno);
        if (namespaces.HasFlag(NamespaceSet.User) && errno is Errno.EPERM or Errno.EACCES or Errno.ENOSPC or Errno.EUSERS or Errno.EINVAL)
        {
            return new SandboxException(SandboxErrorCode.UserNamespacesUnavailable,
                $"this host does not let an unprivileged user create namespaces (clone: {cause}). " +
                HostHints.UserNamespaceFix() + " Run `sandbox check` for details.");
        }
        return new SandboxException(SandboxErrorCode.SpawnFailed, $"could not create the sandbox's init process (clone: {cause})");
    }
}
