//! The UI's two languages, 简体中文 and English: every visible string is a [`Key`], looked up in
//! one table so a missing translation cannot compile.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// From a BCP 47 tag such as `navigator.language` (`zh-CN`, `zh-Hans`, `en-US`).
    pub fn from_tag(tag: &str) -> Lang {
        if tag.to_ascii_lowercase().starts_with("zh") { Lang::Zh } else { Lang::En }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }
}

macro_rules! texts {
    ($($key:ident => $en:expr, $zh:expr;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Key { $($key),* }

        impl Key {
            pub const ALL: &[Key] = &[$(Key::$key),*];

            pub fn text(self, lang: Lang) -> &'static str {
                match (self, lang) {
                    $((Key::$key, Lang::En) => $en, (Key::$key, Lang::Zh) => $zh,)*
                }
            }
        }
    };
}

texts! {
    AppTitle => "CareBot", "CareBot 医疗助手";
    Tagline => "Private medical chat: the model runs on your own GPU and nothing you type leaves this device.",
        "私密医疗咨询：模型在您自己的 GPU 上运行，您输入的内容不会离开本设备。";
    DisclaimerTitle => "Before you start", "使用前请阅读";
    DisclaimerBody => "CareBot gives general health information, not a diagnosis or treatment. It can be wrong. Talk to a doctor about your health. In an emergency, call your local emergency number now (for example 120 in China, 911 in the US, 112 in Europe).",
        "CareBot 提供一般健康信息，不能代替诊断或治疗，也可能出错。有关健康问题请咨询医生。遇到紧急情况，请立即拨打当地急救电话（例如中国 120、美国 911、欧洲 112）。";
    DisclaimerAccept => "I understand", "我已了解";
    DisclaimerShort => "Information, not a diagnosis. In an emergency, call your local emergency number.",
        "仅供参考，不构成诊断。紧急情况请拨打当地急救电话。";
    About => "About & disclaimer", "说明与免责声明";
    Language => "Language", "语言";
    History => "Conversations", "对话记录";
    NewChat => "New conversation", "新对话";
    DeleteOne => "Delete", "删除";
    DeleteAll => "Delete all conversations", "删除全部对话";
    ConfirmDeleteAll => "Delete every saved conversation?", "确定删除所有已保存的对话吗？";
    ExportMarkdown => "Export Markdown", "导出 Markdown";
    ExportJson => "Export JSON", "导出 JSON";
    NoConversations => "No saved conversations yet.", "还没有保存的对话。";
    SetAside => "Some saved conversations could not be read; they are kept aside in this browser, not deleted. Number:",
        "部分已保存的对话无法读取，已单独保留在本浏览器中，未被删除。数量：";
    ChangedElsewhere => "This conversation was changed in another tab, so this tab's version was saved as a separate conversation. Nothing was overwritten.",
        "此对话已在另一个标签页中被修改，因此本标签页的版本已另存为一个新对话，没有内容被覆盖。";
    HistoryFull => "The browser's storage for this site is full: this conversation could not be saved. Export it (Markdown or JSON, at the left) and free some space.",
        "本站点的浏览器存储已满，此对话无法保存。请导出（左侧的 Markdown 或 JSON）并释放一些空间。";
    Interrupted => "This answer did not finish: its page was closed or stopped while writing it. Regenerate to answer again.",
        "此回答未完成：撰写时页面被关闭或中断。可点击“重新生成”重新回答。";
    WrittenElsewhere => "Another tab is writing this answer…", "另一个标签页正在撰写此回答……";
    PersistGranted => "This browser keeps the model and your conversations until you delete them.",
        "本浏览器会保留模型和您的对话，直到您将其删除。";
    PersistRefused => "This browser may delete the downloaded model and your saved conversations when the disk runs low. Export conversations you want to keep.",
        "磁盘空间不足时，本浏览器可能会删除已下载的模型和已保存的对话。请导出需要保留的对话。";
    Settings => "Settings", "设置";
    SystemPrompt => "System prompt (empty: none)", "系统提示词（留空则不使用）";
    Temperature => "Temperature (0 = most likely answer)", "温度（0 = 总是选最可能的词）";
    TopP => "Top-p", "Top-p";
    MaxTokens => "Most tokens per answer", "每次回答的最大词元数";
    Seed => "Seed", "随机种子";
    Close => "Close", "关闭";
    Model => "Model", "模型";
    Source => "Source", "来源";
    ModelProbing => "Looking at the model…", "正在检查模型…";
    ModelNotCached => "This model is not on this device yet.", "此模型尚未保存在本设备上。";
    ModelPartlyCached => "Part of this model is already on this device; the download continues where it stopped.",
        "此模型已部分下载，将从中断处继续。";
    DownloadAndLoad => "Download and load", "下载并加载";
    PrepareTitle => "One-time preparation", "一次性准备";
    PrepareExplain => "Nobody hosts a 4-bit copy of this model, so your browser makes one: it downloads the original weights and quantizes them on your GPU to a 4-bit (Q4_K_M) model kept on this device. This happens once; later visits load the prepared model without the network. You can close the page at any time: the preparation continues where it stopped.",
        "目前没有现成的 4 位模型文件，因此由您的浏览器自行制作：下载原始权重，在您的 GPU 上量化为 4 位（Q4_K_M）模型并保存在本设备上。只需进行一次，之后访问将直接从本设备加载，无需网络。您可以随时关闭页面，下次会从中断处继续。";
    PrepareDownload => "Download", "下载量";
    PrepareResult => "prepared model (space needed)", "准备好的模型（所需空间）";
    PrepareAlreadyDone => "already done", "已完成";
    PrepareAndLoad => "Prepare and load", "准备并加载";
    Preparing => "Preparing", "正在准备";
    Quantizing => "Quantizing on the GPU", "正在 GPU 上量化";
    PreparedIn => "prepared in", "准备用时";
    LoadModel => "Load model", "加载模型";
    Downloading => "Downloading", "正在下载";
    LoadingFromCache => "Loading from this device", "正在从本设备加载";
    ReadingFile => "Reading the file", "正在读取文件";
    TimeLeft => "left", "剩余";
    ModelReady => "Ready", "已就绪";
    ModelRead => "Read from the file", "从文件读取的参数";
    FromCache => "loaded from this device, no network used", "从本设备加载，未使用网络";
    DeleteCache => "Delete the downloaded model", "删除已下载的模型";
    CacheDeleted => "The downloaded model was deleted from this device.", "已从本设备删除下载的模型。";
    OpenLocal => "Or open a .gguf file from this computer (read in place, never uploaded):",
        "或打开本机的 .gguf 文件（直接读取，不会上传）：";
    DropHere => "Drop a .gguf file here", "将 .gguf 文件拖到此处";
    StorageShort => "Not enough browser storage: the model needs", "浏览器存储空间不足：模型还需要";
    StorageShortAvail => "but this site may store only", "但本站点只能再存储";
    StorageShortHint => "Free space on the disk, allow this site more storage, or open the .gguf file from this computer instead.",
        "请释放磁盘空间、允许本站点使用更多存储，或改为打开本机的 .gguf 文件。";
    StorageAvailable => "browser storage available", "可用浏览器存储";
    Retry => "Try again", "重试";
    Reload => "Load the model again", "重新加载模型";
    Placeholder => "Describe your symptoms or ask a health question…", "描述您的症状或提出健康问题……";
    Send => "Send", "发送";
    Stop => "Stop", "停止";
    Regenerate => "Regenerate", "重新生成";
    Edit => "Edit", "编辑";
    You => "You", "您";
    Assistant => "CareBot", "CareBot";
    TokensPerSecond => "tokens/s", "词元/秒";
    Tokens => "tokens", "词元";
    WritingSpeed => "writing", "生成";
    ReadingPrompt => "read the prompt", "读取提示";
    Copy => "Copy", "复制";
    ExportAll => "Export all (JSON)", "全部导出（JSON）";
    Import => "Import conversations", "导入对话";
    Imported => "Conversations imported:", "已导入的对话：";
    AlreadyHere => "already here:", "已存在：";
    ImportFailed => "This file could not be imported:", "无法导入此文件：";
    Copied => "Copied", "已复制";
    CopyFailed => "Could not copy", "无法复制";
    ResetSettings => "Reset to defaults", "恢复默认设置";
    SettingsUnreadable => "Saved settings could not be read, so the defaults are used:", "无法读取已保存的设置，已使用默认设置：";
    Context => "Context", "上下文";
    Dropped => "The conversation outgrew the model's context: the oldest turns were left out of this answer:",
        "对话超出了模型的上下文长度，本次回答未包含最早的几轮对话：";
    Stopped => "stopped", "已停止";
    CutShort => "cut short: the context is full", "上下文已满，回答被截断";
    ErrNoWebGpu => "This browser cannot run CareBot: it has no WebGPU.", "此浏览器无法运行 CareBot：不支持 WebGPU。";
    ErrNoWebGpuHelp => "Use a current Chrome or Edge (version 113 or later) on Windows, macOS or ChromeOS, Chrome on Android 12+, or Safari 26+. On Linux, Chrome needs chrome://flags/#enable-unsafe-webgpu and chrome://flags/#enable-vulkan enabled. Firefox has WebGPU on by default on Windows from version 141 and on macOS (Apple silicon) from version 145; on Linux (tested: Firefox ESR 153) set dom.webgpu.enabled to true in about:config and restart. Make sure hardware acceleration is on in the browser's settings.",
        "请使用新版 Chrome 或 Edge（113 或更高版本，Windows、macOS、ChromeOS）、Android 12 及以上的 Chrome，或 Safari 26 及以上版本。Linux 上的 Chrome 需要在 chrome://flags 中启用 #enable-unsafe-webgpu 和 #enable-vulkan。Firefox 在 Windows 上自 141 版、在 macOS（Apple 芯片）上自 145 版起默认开启 WebGPU；在 Linux 上（已测试 Firefox ESR 153）请在 about:config 中将 dom.webgpu.enabled 设为 true 并重启。请确认浏览器设置中已开启硬件加速。";
    ErrGpuTooSmall => "This GPU is too small for the model.", "此 GPU 无法容纳该模型。";
    ErrDeviceLost => "The GPU stopped working (device lost). Your conversation is kept.", "GPU 停止工作（设备丢失）。您的对话已保留。";
    ErrGpuHung => "The GPU stopped responding, so the answer was stopped. What was written and your conversation are kept; load the model again to go on.",
        "GPU 停止响应，回答已中止。已写出的内容和您的对话均已保留；请重新加载模型以继续。";
    ErrGpuFault => "The GPU reported an error, so its results are no longer trusted. Your conversation is kept; load the model again to go on.",
        "GPU 报告了错误，其计算结果已不可信。您的对话已保留；请重新加载模型以继续。";
    ErrOutOfMemory => "The GPU ran out of memory. Your conversation is kept; close other tabs or apps using the GPU and load again.",
        "GPU 内存不足。您的对话已保留；请关闭其他使用 GPU 的标签页或程序后重新加载。";
    ErrNotFound => "There is no model file at this address.", "此地址没有模型文件。";
    ErrHttp => "The server refused the download.", "服务器拒绝了下载请求。";
    ErrNoRange => "The server cannot send the file in parts (HTTP Range requests), which CareBot needs to download big models safely.",
        "服务器不支持分段传输（HTTP Range 请求），CareBot 需要它来安全下载大模型。";
    ErrNetwork => "The download failed. What was downloaded is kept; try again to continue.", "下载失败。已下载的部分已保留，重试即可继续。";
    ErrSourceChanged => "The model file changed on its server while it was being downloaded. The part already downloaded was dropped, so that the two versions never mix; load again to download the new version.",
        "模型文件在下载过程中于服务器上发生了变化。为避免两个版本混在一起，已下载的部分已被丢弃；请重新加载以下载新版本。";
    ErrNotGguf => "This file is not a GGUF model.", "此文件不是 GGUF 模型。";
    ErrWrongArchitecture => "This model's architecture is not supported: CareBot runs llama-architecture models.",
        "不支持此模型的架构：CareBot 只能运行 llama 架构的模型。";
    ErrStorageFull => "The browser's storage for this site is full. What was downloaded is kept.", "本站点的浏览器存储已满。已下载的部分已保留。";
    ErrModel => "The model could not be used.", "无法使用该模型。";
    ErrBusy => "Busy: wait for the current answer, or stop it.", "正忙：请等待当前回答完成或先停止。";
    ErrInternal => "Something went wrong.", "出现错误。";
    LinkIgnored => "Ignored link parameters:", "已忽略的链接参数：";
    LinkTitle => "This link asks to change CareBot", "此链接请求更改 CareBot 的设置";
    LinkIntro => "Nothing below applies unless you accept. If you did not expect this, keep the defaults.",
        "除非您接受，以下内容都不会生效。如果这不是您预期的，请保留默认设置。";
    LinkModelFile => "Use the model file at", "使用此地址的模型文件：";
    LinkFrom => "from", "来自";
    LinkThisSite => "this site", "本网站";
    LinkHubRepo => "Prepare the model repository", "准备模型仓库";
    LinkThroughHub => "through the hub at", "通过此模型中心：";
    LinkNotOfficialHub => "This is not the official Hugging Face hub: the weights it serves may not be what the name says.",
        "这不是官方 Hugging Face 模型中心：它提供的权重可能与名称不符。";
    LinkSystem => "Replace the system prompt (the assistant's instructions) with:", "将系统提示（助手的指令）替换为：";
    LinkNoSystem => "Remove the system prompt: the assistant gets no instructions.", "删除系统提示：助手将没有任何指令。";
    LinkSampling => "Set how answers are sampled:", "设置回答的采样参数：";
    LinkAccept => "Accept these settings", "接受这些设置";
    LinkDecline => "Keep the defaults", "保留默认设置";
    LeaveTitle => "You are leaving CareBot", "您即将离开 CareBot";
    LeaveBody => "The model wrote this link. Check the full address before you open it:",
        "此链接由模型生成。打开前请核对完整地址：";
    LeaveOpen => "Open in a new tab", "在新标签页中打开";
    LeaveStay => "Stay here", "留在此页";
    Via => "via", "经由";
    WorkerMemory => "worker memory", "工作线程内存";
    SoftwareGpu => "This GPU is a software renderer: answers will be slow.", "当前 GPU 为软件渲染，回答会很慢。";
    ModelsOnDevice => "Models on this device", "本设备上的模型";
    ModelsNone => "No model is stored on this device.", "本设备上没有存储模型。";
    ModelComplete => "complete", "完整";
    ModelPartial => "partial download", "未下载完";
    ModelUnknownFile => "a file no record explains", "无记录的文件";
    LastUsed => "last used", "上次使用";
    NeverLoaded => "never loaded", "从未加载";
    StorageUsedOf => "of browser storage used, out of", "浏览器存储已用，上限";
    StorageUsedUnknown => "This browser does not say how much storage this site uses.", "此浏览器未提供本站点的存储用量。";
    PersistUnknown => "Whether this browser keeps the models when the disk runs low is not known yet.",
        "尚不清楚磁盘空间不足时此浏览器是否会保留模型。";
    KeepModels => "Ask the browser to keep them", "请求浏览器保留";
    ModelDeleted => "Deleted from this device:", "已从本设备删除：";
    UpdateReady => "A new version of CareBot is ready.", "CareBot 有新版本可用。";
    UpdateNow => "Reload to update", "重新加载以更新";
    AppVersion => "version", "版本";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_exists_in_both_languages() {
        for key in Key::ALL {
            let (en, zh) = (key.text(Lang::En), key.text(Lang::Zh));
            assert!(!en.is_empty() && !zh.is_empty(), "{key:?}");
            // Only names and symbols may read the same in both languages.
            if en == zh {
                assert!(matches!(key, Key::TopP | Key::Assistant), "{key:?} is not translated");
            }
        }
    }

    #[test]
    fn browser_language_picks_the_ui_language() {
        assert_eq!(Lang::from_tag("zh-CN"), Lang::Zh);
        assert_eq!(Lang::from_tag("zh-Hant-TW"), Lang::Zh);
        assert_eq!(Lang::from_tag("en-GB"), Lang::En);
        assert_eq!(Lang::from_tag("fr"), Lang::En);
    }
}
