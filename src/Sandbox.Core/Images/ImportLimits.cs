namespace Sandbox.Images;

/// <summary>
/// Bounds on what an import will accept: archives are hostile until proven otherwise, and a small
/// compressed layer can expand without end. Exceeding one fails the import with
/// <see cref="SandboxErrorCode.ImageTooLarge"/>; nothing is stored.
/// </summary>
public sealed record ImportLimits
{
    public static ImportLimits Default { get; } = new();

    /// <summary>The largest single file in a layer (64 GiB).</summary>
    public long MaxEntrySize { get; init; } = 64L << 30;

    /// <summary>The most uncompressed bytes in one layer's tar stream (256 GiB).</summary>
    public long MaxLayerSize { get; init; } = 256L << 30;

    /// <summary>The most uncompressed bytes in all of an image's layers (512 GiB).</summary>
    public long MaxImageSize { get; init; } = 512L << 30;

    /// <summary>The most entries in one layer (10 million).</summary>
    public long MaxEntries { get; init; } = 10_000_000;

    /// <summary>The most layers in one image (500, overlayfs's own limit on lower directories).</summary>
    public int MaxLayers { get; init; } = 500;

    /// <summary>The largest JSON document (index, manifest, config, manifest.json) read into memory (16 MiB).</summary>
    public int MaxJsonSize { get; init; } = 16 << 20;
}
