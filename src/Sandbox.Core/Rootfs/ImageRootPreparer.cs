using Sandbox.Storage;

namespace Sandbox.Rootfs;

/// <summary>
/// Turns an image root with <see cref="StorageDriver.Auto"/> into one with a concrete driver before
/// it is planned, and, for the copy driver, the directory the layers are copied into: a locked
/// working directory under the store's tmp/ (removed after the run; if the CLI is killed, the next
/// import or prune removes it) or, with --keep, KeepDirectory/root.
/// </summary>
internal sealed class ImageRootPreparer : IDisposable
{
    private WorkDirectory? _work;

    private ImageRootPreparer(ImageRoot root, WorkDirectory? work)
    {
        Root = root;
        _work = work;
    }

    public ImageRoot Root { get; }

    /// <summary>Whether <see cref="Dispose"/> removes a per-run copy, which PID 1 must be gone for.</summary>
    public bool RemovesCopy => Volatile.Read(ref _work) is not null;

    /// <summary>The store an image's layers live in: STORE/l/KEY.</summary>
    public static string StoreOf(ImageRoot image)
    {
        var layers = RootfsPlanner.CheckLayers(image);
        return Path.GetDirectoryName(Path.GetDirectoryName(layers[0])!)!;
    }

    /// <summary>Chooses the driver (warning when it falls back) and makes the copy driver's empty directory.</summary>
    public static ImageRootPreparer Choose(ImageRoot image, IStorageDriverHost host, Action<string> warn, bool payloadMayPtrace)
    {
        StorageDriverChoice choice = StorageDriverSelector.Choose(image.Driver, host, payloadMayPtrace, image.Image.Layers.Length);
        if (choice.Warning is string warning)
            warn("warning: " + warning);
        image = image with { Driver = choice.Driver, FuseOverlayfsProgram = choice.FuseOverlayfsProgram };
        if (choice.Driver != StorageDriver.Copy)
        {
            if (image.KeepDirectory is string keep)
            {
                Directory.CreateDirectory(Path.Combine(keep, "upper"));
                Directory.CreateDirectory(Path.Combine(keep, "work"));
            }
            return new ImageRootPreparer(image, null);
        }
        if (image.KeepDirectory is not null)
            return new ImageRootPreparer(image with { CopiedRoot = image.KeptChanges }, null);
        WorkDirectory work = new TempArea(Path.Combine(StoreOf(image), "tmp")).Create();
        return new ImageRootPreparer(image with { CopiedRoot = Path.Combine(work.Path, "root") }, work);
    }

    /// <summary>Copies the layers, for the copy driver (once the plan is known to be valid); otherwise nothing.</summary>
    /// <param name="maps">The run's id map.</param>
    /// <param name="identity">The caller, for the subordinate range a <c>--userns single</c> run's copy of owned layers needs.</param>
    public void Materialize(Runtime.IdMapPlan maps, Identity.IdentityEnvironment identity)
    {
        if (Root is not { Driver: StorageDriver.Copy, CopiedRoot: string target })
            return;
        var layers = RootfsPlanner.CheckLayers(Root);
        try
        {
            if (LayerCopyHelper.MapFor(Root.Image, maps, identity) is Runtime.IdMapPlan owners)
                LayerCopyHelper.Copy(layers, target, owners);
            else if (!TryCopyAsCaller(layers, target))
                LayerCopyHelper.Copy(layers, target, Identity.IdMapResolver.Resolve(UserNamespaceMode.Single, identity));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Linux.LinuxException)
        {
            throw new SandboxException(SandboxErrorCode.SetupFailed, $"copying the image's layers into {target} failed: {e.Message}", e);
        }
    }

    /// <summary>
    /// Copies flattened layers in this process, which never changes the store: an entry the caller
    /// owns but may not read (a 0000 file; a 0000 directory, which cannot even be listed) fails it.
    /// It once chmod'ed such an entry in the store for the copy and back after, which a concurrent run
    /// saw (overlay runs included), a killed run left for good, and which failed on a 0000 directory
    /// with content. False when an entry was refused (EACCES): what was copied is removed, and the
    /// copy is made again by root of a single-id user namespace, whose CAP_DAC_OVERRIDE reads the
    /// caller's files whatever their modes (capabilities(7)).
    /// </summary>
    private static bool TryCopyAsCaller(IReadOnlyList<string> layers, string target)
    {
        try
        {
            LayerCopier.Copy(layers, target);
            return true;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or Linux.LinuxException { Errno: Linux.Errno.EACCES })
        {
            TreeRemover.Remove(target);
            return false;
        }
    }

    /// <summary>
    /// Removes the per-run copy (a kept one stays). It may hold files of ids other than ours: the
    /// image's owners, or what a payload under a subordinate map wrote. Those are removed by root of
    /// a user namespace with the caller's subordinate range (<see cref="TreeRemover"/>, as
    /// `podman unshare rm -rf` would); what cannot be removed now is left, under the work
    /// directory's lock file, for the next import or prune.
    /// </summary>
    public void Dispose() => Interlocked.Exchange(ref _work, null)?.Dispose();
}
