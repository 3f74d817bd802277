namespace Sandbox.Images;

public enum ImportStage
{
    /// <summary>Reading the archive's index, manifest and config.</summary>
    Reading,
    /// <summary>Another process holds a lock this import needs (it is importing the same layer, or pruning).</summary>
    Waiting,
    /// <summary>Reading, verifying and unpacking a layer; <see cref="ImportProgress.BytesDone"/> moves.</summary>
    Unpacking,
    /// <summary>The layer is in the store already (same diff id): not read again.</summary>
    LayerReused,
    /// <summary>Something worth telling but not an error (devices skipped, xattrs dropped, another platform).</summary>
    Warning,
    /// <summary>The image record is written.</summary>
    Done,
}

/// <summary>
/// A progress report of <c>ImageStore.Import</c>. Bytes are those of the layer blobs as stored in
/// the archive (compressed), which is what is known in advance.
/// </summary>
public sealed record ImportProgress(ImportStage Stage, string Message)
{
    /// <summary>1-based index of the layer this report is about, 0 when none.</summary>
    public int LayerIndex { get; init; }
    public int LayerCount { get; init; }
    public string? LayerDigest { get; init; }
    public long BytesDone { get; init; }
    public long BytesTotal { get; init; }
}
