//! The desktop window (eframe/egui): the VM list with each VM's state and actions, and the
//! create dialog with every field checked as it is typed.
//!
//! The window drives VMs exactly as the CLI does (the same [`Library`], [`Runtime`] and
//! [`cli::create_vm`]), so closing it leaves VMs running and reopening finds them. Actions
//! that wait (start waits for the VMM's VNC line; destroy may wait for a timeout) run on a
//! worker thread and report back, so the window never freezes.
//!
//! The console is [`crate::console`]. Not built yet: live thumbnails, edit/reinstall, the
//! host-check page (the CLI has `vmdesk doctor`), file dialogs.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use eframe::egui;
use egui::{Color32, RichText};

use crate::cli::{self, CreateArgs, DiskOpt};
use crate::library::{self, HostFacts, Library, VmDef};
use crate::runtime::{self, Runtime, VmState};

const MIB: u64 = 1 << 20;
/// How often the list asks each VM its state.
const REFRESH: Duration = Duration::from_secs(1);

/// One row of the list.
struct Row {
    name: String,
    def: Result<VmDef, String>,
    state: VmState,
    vnc: Option<String>,
}

/// What the user typed in the create dialog.
#[derive(Clone, Debug)]
pub struct CreateForm {
    pub name: String,
    pub memory: String,
    pub cpus: String,
    /// Empty for no new disk.
    pub disk_size: String,
    pub disk_qcow2: bool,
    pub cdrom: String,
    pub vnc: String,
}

impl Default for CreateForm {
    fn default() -> Self {
        CreateForm {
            name: String::new(),
            memory: "1G".into(),
            cpus: "1".into(),
            disk_size: "10G".into(),
            disk_qcow2: true,
            cdrom: String::new(),
            vnc: "127.0.0.1:auto".into(),
        }
    }
}

/// The reason beside each field (None: the field is fine), and warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormCheck {
    pub name: Option<String>,
    pub memory: Option<String>,
    pub cpus: Option<String>,
    pub cpus_warning: Option<String>,
    pub disk: Option<String>,
    pub cdrom: Option<String>,
    pub vnc: Option<String>,
}

impl FormCheck {
    pub fn ok(&self) -> bool {
        [
            &self.name,
            &self.memory,
            &self.cpus,
            &self.disk,
            &self.cdrom,
            &self.vnc,
        ]
        .iter()
        .all(|f| f.is_none())
    }
}

impl CreateForm {
    /// Checks every field on its own, with the same rules `vmdesk create` applies.
    pub fn check(&self, taken: &dyn Fn(&str) -> bool, host: &HostFacts) -> FormCheck {
        let mut c = FormCheck::default();
        let name = self.name.trim();
        if let Err(e) = library::validate_name(name) {
            c.name = Some(if name.is_empty() {
                "a name is needed".into()
            } else {
                e.to_string()
            });
        } else if taken(name) {
            c.name = Some(format!("a VM named '{name}' already exists"));
        }
        match vmm::config::parse_memory(&self.memory) {
            Err(e) => c.memory = Some(e),
            Ok(bytes) => {
                let mut def = VmDef::new("x", bytes.div_ceil(MIB), 1);
                def.cpus = 1;
                if let Err(e) = library::validate(&def, host) {
                    c.memory = Some(e.to_string());
                }
            }
        }
        match self.cpus.trim().parse::<u32>() {
            Ok(0) | Err(_) => c.cpus = Some("a number of vCPUs, 1 or more".into()),
            Ok(n) if n > 255 => c.cpus = Some("at most 255 vCPUs".into()),
            Ok(n) if n as usize > host.cpus => {
                c.cpus_warning = Some(format!(
                    "more than this host's {} CPUs: slower, not faster",
                    host.cpus
                ))
            }
            Ok(_) => {}
        }
        if !self.disk_size.trim().is_empty()
            && let Err(e) = crate::disk::parse_size(&self.disk_size)
        {
            c.disk = Some(e);
        }
        let iso = self.cdrom.trim();
        if !iso.is_empty() && !std::path::Path::new(iso).is_file() {
            c.cdrom = Some("no such file".into());
        }
        if vmm::config::parse_vnc(self.vnc.trim()).is_err() {
            c.vnc = Some("use ADDR:N, ADDR:auto or none".into());
        }
        c
    }

    /// The CLI's arguments for this form (only called once [`CreateForm::check`] passed).
    fn to_args(&self) -> Result<CreateArgs, String> {
        let mut disks = Vec::new();
        if !self.disk_size.trim().is_empty() {
            let spec = format!(
                "size={},format={}",
                self.disk_size.trim(),
                if self.disk_qcow2 { "qcow2" } else { "raw" }
            );
            // Parsed here too, so what the CLI gets is known good.
            let _: DiskOpt = cli::parse_disk_opt(&spec)?;
            disks.push(spec);
        }
        Ok(CreateArgs {
            name: self.name.trim().into(),
            memory: vmm::config::parse_memory(&self.memory)?,
            cpus: self.cpus.trim().parse().map_err(|_| "bad vCPUs")?,
            disks,
            cdrom: Some(self.cdrom.trim())
                .filter(|s| !s.is_empty())
                .map(Into::into),
            kernel: None,
            initrd: None,
            cmdline: None,
            vnc: self.vnc.trim().into(),
            vnc_password_file: None,
        })
    }
}

/// Actions that run on a worker thread.
enum Job {
    Start,
    Shutdown,
    Destroy,
    Reset,
    Pause,
    Resume,
    Delete { disks: bool },
}

pub struct VmdeskApp {
    lib: Library,
    rt: Runtime,
    host: HostFacts,
    rows: Vec<Row>,
    list_error: Option<String>,
    refreshed: Option<Instant>,
    create: Option<CreateForm>,
    create_error: Option<String>,
    confirm_delete: Option<(String, bool)>,
    messages: Vec<(Instant, String, bool)>,
    done_tx: Sender<(String, Result<String, String>)>,
    done_rx: Receiver<(String, Result<String, String>)>,
    busy: std::collections::HashSet<String>,
    console: Option<crate::console::Console>,
}

impl VmdeskApp {
    pub fn new(lib: Library, rt: Runtime, host: HostFacts) -> VmdeskApp {
        let (done_tx, done_rx) = channel();
        VmdeskApp {
            lib,
            rt,
            host,
            rows: Vec::new(),
            list_error: None,
            refreshed: None,
            create: None,
            create_error: None,
            confirm_delete: None,
            messages: Vec::new(),
            done_tx,
            done_rx,
            busy: Default::default(),
            console: None,
        }
    }

    fn refresh(&mut self) {
        self.refreshed = Some(Instant::now());
        match self.lib.list() {
            Ok(entries) => {
                self.list_error = None;
                self.rows = entries
                    .into_iter()
                    .map(|e| {
                        let state = self.rt.state(&e.name);
                        let vnc = state
                            .is_live()
                            .then(|| self.rt.vnc_addr(&e.name).map(runtime::vnc_display))
                            .flatten();
                        Row {
                            def: e.def.map_err(|err| err.to_string()),
                            name: e.name,
                            state,
                            vnc,
                        }
                    })
                    .collect();
            }
            Err(e) => self.list_error = Some(e.to_string()),
        }
    }

    fn run_job(&mut self, name: &str, job: Job) {
        let (lib, rt, tx, name) = (
            self.lib.clone(),
            self.rt.clone(),
            self.done_tx.clone(),
            name.to_string(),
        );
        self.busy.insert(name.clone());
        std::thread::spawn(move || {
            let r = (|| -> anyhow::Result<String> {
                let json = serde_json::json!({});
                Ok(match job {
                    Job::Start => {
                        let def = lib.get(&name)?;
                        let vmm = runtime::find_vmm()?;
                        match rt.start(&def, &vmm)? {
                            Some(a) => {
                                format!("started '{name}': vncviewer {}", runtime::vnc_display(a))
                            }
                            None => format!("started '{name}'"),
                        }
                    }
                    Job::Shutdown => {
                        rt.command(&name, "powerdown", json)?;
                        format!("pressed the power button of '{name}'")
                    }
                    Job::Destroy => {
                        rt.destroy(&name, Duration::from_secs(10))?;
                        format!("'{name}' is off")
                    }
                    Job::Reset => {
                        rt.command(&name, "reset", json)?;
                        format!("reset '{name}'")
                    }
                    Job::Pause => {
                        rt.command(&name, "pause", json)?;
                        format!("paused '{name}'")
                    }
                    Job::Resume => {
                        rt.command(&name, "resume", json)?;
                        format!("resumed '{name}'")
                    }
                    Job::Delete { disks } => {
                        cli::delete(&lib, &rt, &name, disks)?;
                        format!("deleted '{name}'")
                    }
                })
            })();
            let _ = tx.send((name, r.map_err(|e| format!("{e:#}"))));
        });
    }

    fn say(&mut self, text: String, error: bool) {
        self.messages.push((Instant::now(), text, error));
    }

    /// Draws the whole window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        while let Ok((name, r)) = self.done_rx.try_recv() {
            self.busy.remove(&name);
            match r {
                Ok(m) => self.say(m, false),
                Err(e) => self.say(e, true),
            }
            self.refreshed = None;
        }
        if self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.refresh();
        }
        ui.ctx().request_repaint_after(REFRESH);
        self.messages
            .retain(|(t, _, err)| t.elapsed() < Duration::from_secs(if *err { 30 } else { 8 }));

        egui::Panel::top("toolbar").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("vmdesk");
                if ui.button("New VM").clicked() && self.create.is_none() {
                    self.create = Some(CreateForm::default());
                    self.create_error = None;
                }
            });
        });
        egui::Panel::bottom("messages").show(ui, |ui| {
            if self.messages.is_empty() {
                ui.label(" ");
            }
            for (_, m, err) in &self.messages {
                let colour = if *err {
                    Color32::LIGHT_RED
                } else {
                    ui.visuals().text_color()
                };
                ui.label(RichText::new(m).color(colour));
            }
        });
        egui::CentralPanel::default().show(ui, |ui| self.list_ui(ui));
        self.create_dialog(ui.ctx());
        self.delete_dialog(ui.ctx());
        self.console_window(ui.ctx());
    }

    fn list_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(e) = &self.list_error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        if self.rows.is_empty() {
            ui.label("No VMs yet: press \"New VM\".");
            return;
        }
        let mut jobs: Vec<(String, Job)> = Vec::new();
        let mut copy = None;
        let mut open_console = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            egui::Grid::new("vms")
                .striped(true)
                .num_columns(6)
                .show(ui, |ui| {
                    for h in ["Name", "State", "Memory", "vCPUs", "VNC", "Actions"] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for row in &self.rows {
                        ui.label(&row.name);
                        let (label, colour) = match &row.state {
                            VmState::Running => ("running", Color32::LIGHT_GREEN),
                            VmState::Paused => ("paused", Color32::YELLOW),
                            VmState::Crashed { .. } => ("crashed", Color32::LIGHT_RED),
                            VmState::Stopped => ("stopped", ui.visuals().text_color()),
                        };
                        let state = ui.label(RichText::new(label).color(colour));
                        if let VmState::Crashed { why, log_tail } = &row.state {
                            state.on_hover_text(format!("{why}\n\n{log_tail}"));
                        }
                        match &row.def {
                            Ok(d) => {
                                ui.label(format!("{} MiB", d.memory_mib));
                                ui.label(d.cpus.to_string());
                            }
                            Err(e) => {
                                ui.colored_label(Color32::LIGHT_RED, "unreadable")
                                    .on_hover_text(e);
                                ui.label("");
                            }
                        }
                        match &row.vnc {
                            Some(v) => {
                                ui.horizontal(|ui| {
                                    let line = format!("vncviewer {v}");
                                    ui.monospace(&line);
                                    if ui.small_button("Copy").clicked() {
                                        copy = Some(line);
                                    }
                                });
                            }
                            None => {
                                ui.label("-");
                            }
                        }
                        let busy = self.busy.contains(&row.name);
                        ui.add_enabled_ui(!busy, |ui| {
                            ui.horizontal(|ui| {
                                let n = &row.name;
                                let live = row.state.is_live();
                                let readable = row.def.is_ok();
                                if !live {
                                    if ui
                                        .add_enabled(readable, egui::Button::new("Start"))
                                        .clicked()
                                    {
                                        jobs.push((n.clone(), Job::Start));
                                    }
                                    if ui.button("Delete…").clicked() {
                                        self.confirm_delete = Some((n.clone(), false));
                                    }
                                } else {
                                    if row.vnc.is_some() && ui.button("Console").clicked() {
                                        open_console = Some(n.clone());
                                    }
                                    if ui.button("Shut down").clicked() {
                                        jobs.push((n.clone(), Job::Shutdown));
                                    }
                                    if ui.button("Force off").clicked() {
                                        jobs.push((n.clone(), Job::Destroy));
                                    }
                                    if ui.button("Reset").clicked() {
                                        jobs.push((n.clone(), Job::Reset));
                                    }
                                    if row.state == VmState::Paused {
                                        if ui.button("Resume").clicked() {
                                            jobs.push((n.clone(), Job::Resume));
                                        }
                                    } else if ui.button("Pause").clicked() {
                                        jobs.push((n.clone(), Job::Pause));
                                    }
                                }
                                if busy {
                                    ui.spinner();
                                }
                            });
                        });
                        ui.end_row();
                    }
                });
        });
        if let Some(line) = copy {
            ui.ctx().copy_text(line);
        }
        if let Some(name) = open_console
            && let Some(addr) = self.rt.vnc_addr(&name)
        {
            let password = self.lib.get(&name).ok().and_then(|d| d.vnc_password_file);
            self.console = Some(crate::console::Console::open_with(
                &name,
                addr,
                crate::console::ConsoleOptions {
                    password_file: password,
                    target: Some(crate::console::runtime_target(self.rt.clone(), &name)),
                    standalone: false,
                },
                ui.ctx().clone(),
            ));
        }
        for (name, job) in jobs {
            self.run_job(&name, job);
        }
    }

    fn create_dialog(&mut self, ctx: &egui::Context) {
        let Some(form) = &mut self.create else {
            return;
        };
        let lib = &self.lib;
        let taken = |n: &str| lib.path_of(n).exists();
        let check = form.check(&taken, &self.host);
        let mut open = true;
        let mut submit = false;
        let mut cancel = false;
        egui::Window::new("New VM")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                egui::Grid::new("create").num_columns(3).show(ui, |ui| {
                    let field = |ui: &mut egui::Ui,
                                 label: &str,
                                 value: &mut String,
                                 err: &Option<String>| {
                        ui.label(label);
                        ui.text_edit_singleline(value);
                        match err {
                            Some(e) => ui.colored_label(Color32::LIGHT_RED, e),
                            None => ui.label(""),
                        };
                        ui.end_row();
                    };
                    field(ui, "Name", &mut form.name, &check.name);
                    field(ui, "Memory", &mut form.memory, &check.memory);
                    let cpus_note = check.cpus.clone().or(check.cpus_warning.clone());
                    field(ui, "vCPUs", &mut form.cpus, &cpus_note);
                    field(
                        ui,
                        "New disk (empty: none)",
                        &mut form.disk_size,
                        &check.disk,
                    );
                    ui.label("Disk format");
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut form.disk_qcow2, true, "qcow2");
                        ui.radio_value(&mut form.disk_qcow2, false, "raw");
                    });
                    ui.label("");
                    ui.end_row();
                    field(ui, "Installer ISO", &mut form.cdrom, &check.cdrom);
                    field(ui, "VNC", &mut form.vnc, &check.vnc);
                });
                if let Some(e) = &self.create_error {
                    ui.colored_label(Color32::LIGHT_RED, e);
                }
                ui.horizontal(|ui| {
                    submit = ui
                        .add_enabled(check.ok(), egui::Button::new("Create"))
                        .clicked();
                    cancel = ui.button("Cancel").clicked();
                });
            });
        if submit {
            let r = form
                .to_args()
                .map_err(anyhow::Error::msg)
                .and_then(|a| cli::create_vm(&self.lib, a));
            match r {
                Ok((def, warnings)) => {
                    let mut m = format!("created '{}'", def.name);
                    for w in warnings {
                        m += &format!(" (warning: {w})");
                    }
                    self.say(m, false);
                    self.create = None;
                    self.refreshed = None;
                }
                Err(e) => self.create_error = Some(format!("{e:#}")),
            }
        } else if cancel || !open {
            self.create = None;
        }
    }

    fn console_window(&mut self, ctx: &egui::Context) {
        let Some(console) = &mut self.console else {
            return;
        };
        let mut open = true;
        egui::Window::new(format!("Console: {}", console.name))
            .open(&mut open)
            .default_size([760.0, 470.0])
            .resizable(true)
            .show(ctx, |ui| console.ui(ui));
        if !open {
            self.console = None;
        }
    }

    fn delete_dialog(&mut self, ctx: &egui::Context) {
        let Some((name, disks)) = &mut self.confirm_delete else {
            return;
        };
        let mut decided = None;
        egui::Window::new(format!("Delete '{name}'?"))
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.checkbox(disks, "Also delete its disk images");
                ui.horizontal(|ui| {
                    if ui.button("Delete").clicked() {
                        decided = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        decided = Some(false);
                    }
                });
            });
        if let Some(yes) = decided {
            let (name, disks) = self.confirm_delete.take().expect("checked above");
            if yes {
                self.run_job(&name, Job::Delete { disks });
            }
        }
    }
}

/// Opens the window; returns when it is closed (VMs keep running).
pub fn run() -> anyhow::Result<()> {
    let lib = Library::open_default()?;
    let mut app = VmdeskApp::new(lib, Runtime::open_default(), HostFacts::detect());
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("vmdesk")
            .with_inner_size([960.0, 540.0]),
        ..Default::default()
    };
    eframe::run_ui_native("vmdesk", options, move |ui, _frame| app.ui(ui))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// `vmdesk console NAME`: a window with the VM's console alone.
pub fn run_console(
    name: &str,
    addr: std::net::SocketAddr,
    password_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(format!("{name} - vmdesk"))
            .with_inner_size([740.0, 440.0]),
        ..Default::default()
    };
    let name = name.to_string();
    let mut console: Option<crate::console::Console> = None;
    eframe::run_ui_native("vmdesk-console", options, move |ui, _frame| {
        let c = console.get_or_insert_with(|| {
            let opts = crate::console::ConsoleOptions {
                password_file: password_file.clone(),
                target: None,
                standalone: true,
            };
            crate::console::Console::open_with(&name, addr, opts, ui.ctx().clone())
        });
        egui::CentralPanel::default().show(ui, |ui| c.ui(ui));
    })
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            ram: Some(2048 * MIB),
            cpus: 2,
        }
    }

    #[test]
    fn the_form_checks_each_field() {
        let taken = |n: &str| n == "web1";
        let mut f = CreateForm {
            name: "new".into(),
            ..Default::default()
        };
        let c = f.check(&taken, &host());
        assert!(c.ok(), "{c:?}");

        f.name = "web1".into();
        f.memory = "4G".into();
        f.cpus = "4".into();
        let c = f.check(&taken, &host());
        assert!(!c.ok());
        assert_eq!(c.name.as_deref(), Some("a VM named 'web1' already exists"));
        assert!(c.memory.as_deref().unwrap().contains("2048 MiB"), "{c:?}");
        assert_eq!(c.cpus, None);
        assert!(c.cpus_warning.is_some());
        assert_eq!(c.disk, None);

        f.name = "".into();
        f.memory = "lots".into();
        f.cpus = "0".into();
        f.disk_size = "10X".into();
        f.cdrom = "/no/such.iso".into();
        f.vnc = "everywhere".into();
        let c = f.check(&taken, &host());
        for (field, v) in [
            ("name", &c.name),
            ("memory", &c.memory),
            ("cpus", &c.cpus),
            ("disk", &c.disk),
            ("cdrom", &c.cdrom),
            ("vnc", &c.vnc),
        ] {
            assert!(v.is_some(), "{field}: {c:?}");
        }
        // No disk at all is fine.
        f = CreateForm {
            name: "x".into(),
            disk_size: " ".into(),
            ..Default::default()
        };
        assert!(f.check(&taken, &host()).ok());
        let a = f.to_args().unwrap();
        assert!(a.disks.is_empty());
        assert_eq!(a.memory, 1 << 30);
    }

    fn temp(tag: &str) -> (Library, Runtime, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("vmdesk-gui-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        (
            Library::at(root.join("vms")),
            Runtime::at(root.join("run")),
            root,
        )
    }

    #[test]
    fn ui_create_dialog_rejects_a_taken_name_and_too_much_memory() {
        use egui::accesskit::Role;
        use egui_kittest::Harness;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let (lib, rt, root) = temp("create");
        lib.create(&VmDef::new("web1", 64, 1)).unwrap();
        // The form's default memory (1G) is more than this host has.
        let host = HostFacts {
            ram: Some(512 * MIB),
            cpus: 2,
        };
        let app = VmdeskApp::new(lib, rt, host);
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("New VM").click();
        h.run_steps(2);
        assert!(h.state().create.is_some());
        // An empty name is refused before anything is typed.
        h.get_by_label("a name is needed");
        {
            let name_field = h.get_all_by_role(Role::TextInput).next().unwrap();
            name_field.focus();
            name_field.type_text("web1");
        }
        h.run_steps(3);
        assert_eq!(h.state().create.as_ref().unwrap().name, "web1");
        h.get_by_label("a VM named 'web1' already exists");
        h.get_by_label_contains("more than this host's 512 MiB");
        let create = h.get_by_role_and_label(Role::Button, "Create");
        assert!(create.accesskit_node().is_disabled());
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_list_shows_each_vm_state() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("list");
        lib.create(&VmDef::new("web1", 64, 1)).unwrap();
        lib.create(&VmDef::new("gone", 256, 2)).unwrap();
        std::fs::write(lib.path_of("broken"), "name = [").unwrap();
        // A VMM that ended with a failure: crashed.
        std::fs::write(rt.pid_path("gone"), "999999999\n").unwrap();
        std::fs::write(rt.exit_path("gone"), "exit 1\n").unwrap();
        std::fs::write(
            rt.log_path("gone"),
            "vmdesk-vmm: the guest stopped: triple fault\n",
        )
        .unwrap();
        let app = VmdeskApp::new(lib, rt, host());
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("web1");
        h.get_by_label("gone");
        h.get_by_label("crashed");
        h.get_by_label("unreadable");
        h.get_by_label("256 MiB");
        assert_eq!(h.query_all_by_label("stopped").count(), 2);
        assert_eq!(h.query_all_by_label("Start").count(), 3);
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }
}
