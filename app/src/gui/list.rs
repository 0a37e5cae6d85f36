//! The VM list: a row per VM with a thumbnail of its screen ([`super::thumbs`]), its state,
//! memory, vCPUs, firmware, VNC address, network (the mode and the port forwards that reach
//! the guest) and the actions its state allows.

use eframe::egui;
use egui::{Color32, RichText};

use super::dialogs::{MediaDialog, ReinstallDialog};
use super::files::Target;
use super::form::{FormDialog, VmForm};
use super::{Job, VmdeskApp, thumbs};
use crate::runtime::VmState;

impl VmdeskApp {
    pub(super) fn list_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(e) = &self.list_error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        if self.rows.is_empty() {
            ui.label("No VMs yet: press \"New VM\", or \"Demo\" to try one.");
            return;
        }
        let mut jobs: Vec<(String, Job)> = Vec::new();
        let mut copy = None;
        let mut open_console = None;
        let mut open_serial = None;
        let mut edit = None;
        let mut reinstall = None;
        let mut media = None;
        let mut screenshot = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            egui::Grid::new("vms")
                .striped(true)
                .num_columns(9)
                .show(ui, |ui| {
                    for h in [
                        "Screen", "Name", "State", "Memory", "vCPUs", "Firmware", "VNC", "Network",
                        "Actions",
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for row in &self.rows {
                        let thumb = self.thumbs.get(&row.name).filter(|_| row.state.is_live());
                        match thumb {
                            Some(t) => {
                                let r = ui.add(
                                    egui::Image::new((t.id(), t.size_vec2()))
                                        .fit_to_exact_size(thumbs::SHOWN)
                                        .sense(egui::Sense::click()),
                                );
                                if r.on_hover_text("Open the console").clicked()
                                    && row.vnc.is_some()
                                {
                                    open_console = Some(row.name.clone());
                                }
                            }
                            None => {
                                // Text, not a painted shape, so it reads out (and tests find it).
                                let note = if row.state.is_live() { "…" } else { "off" };
                                ui.add_sized(
                                    thumbs::SHOWN,
                                    egui::Label::new(RichText::new(note).weak()),
                                );
                            }
                        }
                        ui.label(&row.name);
                        let (label, colour) = match &row.state {
                            VmState::Running => ("running", Color32::LIGHT_GREEN),
                            VmState::Paused => ("paused", Color32::YELLOW),
                            VmState::Crashed { .. } => ("crashed", Color32::LIGHT_RED),
                            VmState::Stopped => ("stopped", ui.visuals().text_color()),
                        };
                        ui.vertical(|ui| {
                            // Unwrapped: "stopped" broke in two in a narrow column.
                            ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                            let state = ui.label(RichText::new(label).color(colour));
                            if let VmState::Crashed { why, log_tail } = &row.state {
                                state.on_hover_text(format!("{why}\n\n{log_tail}"));
                            }
                            // A VM in the firmware's "No bootable device": why, and the way out.
                            if let Some(f) = &row.boot {
                                ui.label(
                                    RichText::new(crate::runtime::NO_BOOT_NOTE)
                                        .color(Color32::from_rgb(255, 170, 60)),
                                )
                                .on_hover_text(format!(
                                    "{}.\n\n{}",
                                    f.message,
                                    f.gui_fix()
                                ));
                            }
                            if row.net_down {
                                ui.label(
                                    RichText::new(crate::runtime::NET_DOWN_NOTE)
                                        .color(Color32::from_rgb(255, 170, 60)),
                                )
                                .on_hover_text(format!(
                                    "The guest runs on without a network: its card's link is \
                                     down. Why is in {}; a restart of the VM brings it back.",
                                    self.vms.log_path(&row.name).display()
                                ));
                            }
                        });
                        match &row.def {
                            Ok(d) => {
                                ui.label(format!("{} MiB", d.memory_mib));
                                ui.label(d.cpus.to_string());
                                let fw = ui.label(d.firmware.label());
                                if let Some(p) = &d.efi_vars {
                                    fw.on_hover_text(format!("UEFI variables: {}", p.display()));
                                }
                            }
                            Err(e) => {
                                ui.colored_label(Color32::LIGHT_RED, "unreadable")
                                    .on_hover_text(e);
                                ui.label("");
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
                        match &row.def {
                            Ok(d) => network_cell(ui, d),
                            Err(_) => {
                                ui.label("");
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
                                    if ui
                                        .add_enabled(readable, egui::Button::new("Edit…"))
                                        .clicked()
                                    {
                                        edit = Some(n.clone());
                                    }
                                    if ui
                                        .add_enabled(readable, egui::Button::new("Reinstall…"))
                                        .clicked()
                                    {
                                        reinstall = Some(n.clone());
                                    }
                                    if ui.add_enabled(readable, egui::Button::new("CD…")).clicked()
                                    {
                                        media = Some(n.clone());
                                    }
                                    if ui
                                        .add_enabled(readable, egui::Button::new("Clone…"))
                                        .clicked()
                                    {
                                        self.clone_as =
                                            Some((n.clone(), format!("{n}-clone"), false));
                                    }
                                    if ui.button("Delete…").clicked() {
                                        self.confirm_delete = Some((n.clone(), false));
                                    }
                                } else {
                                    if row.vnc.is_some() && ui.button("Console").clicked() {
                                        open_console = Some(n.clone());
                                    }
                                    if ui.button("Serial").clicked() {
                                        open_serial = Some(n.clone());
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
                                    if ui.add_enabled(readable, egui::Button::new("CD…")).clicked()
                                    {
                                        media = Some(n.clone());
                                    }
                                    if ui.button("Screenshot…").clicked() {
                                        screenshot = Some(n.clone());
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
        if let Some(name) = edit {
            match self.vms.get(&name) {
                Ok(def) if self.form.is_none() => {
                    self.form = Some(FormDialog::new(VmForm::edit(&def)));
                }
                Ok(_) => self.say("finish or cancel the open form first".into(), true),
                Err(e) => self.say(e.to_string(), true),
            }
        }
        if let Some(name) = reinstall {
            self.confirm_reinstall = Some(ReinstallDialog::new(&self.vms, &name));
        }
        if let Some(name) = media {
            let current = self.vms.get(&name).ok().and_then(|d| d.cdrom);
            let live = self
                .rows
                .iter()
                .any(|r| r.name == name && r.state.is_live());
            self.media = Some(MediaDialog {
                name,
                live,
                path: current
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                current,
            });
        }
        if let Some(name) = screenshot {
            self.browse(
                Target::Screenshot(name.clone()),
                &format!("Save the screen of '{name}'"),
                Some(("PNG images", &["png"])),
                true,
            );
        }
        if let Some(line) = copy {
            ui.ctx().copy_text(line);
        }
        if let Some(name) = open_console
            && let Ok(addr) = self.vms.vnc_addr(&name)
        {
            let password = self.vms.get(&name).ok().and_then(|d| d.vnc_password_file);
            self.console = Some(crate::console::Console::open_with(
                &name,
                addr,
                crate::console::ConsoleOptions {
                    password_file: password,
                    target: Some(self.vms.vnc_follower(&name)),
                    standalone: false,
                    frames_shown: None,
                    boot_note: Some(self.vms.boot_note(&name)),
                },
                ui.ctx().clone(),
            ));
        }
        if let Some(name) = open_serial {
            self.serial.open(&self.vms, &name, ui.ctx());
        }
        for (name, job) in jobs {
            self.run_job(&name, job);
        }
    }
}

/// The network column: the mode, then one line per port forward, as a person reaches the
/// guest's services (`127.0.0.1:2222→22`).
fn network_cell(ui: &mut egui::Ui, def: &crate::library::VmDef) {
    use crate::library::{NetMode, forward_label, network_label};
    ui.vertical(|ui| {
        // A vertical cell would wrap an address at the column's first-frame width.
        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
        let mode = ui.label(network_label(&def.network));
        match &def.network {
            NetMode::User => mode.on_hover_text(format!(
                "NAT through passt; MAC {}. The guest reaches this machine's own services at \
                 its gateway address.",
                def.mac
            )),
            NetMode::Tap(name) => mode.on_hover_text(format!(
                "On the TAP device {name} (on your LAN when it is on a bridge); MAC {}",
                def.mac
            )),
            NetMode::None => mode.on_hover_text("No network card"),
        };
        for f in &def.forwards {
            ui.monospace(forward_label(f)).on_hover_text(format!(
                "Connect to {}:{} ({}) to reach the guest's port {}",
                f.host_addr, f.host_port, f.protocol, f.guest_port
            ));
        }
    });
}
