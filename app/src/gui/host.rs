//! The Host page: [`HostCheck`] (what `vmdesk doctor` prints) drawn as a window, each fix
//! with a Copy button. It opens by itself on the first run (no VMs, and never shown
//! before: a marker file in the config dir remembers it) and whenever the host cannot run
//! VMs; the toolbar's "Host" button opens it any time.

use std::path::PathBuf;

use eframe::egui;
use egui::{Color32, RichText};

use super::VmdeskApp;
use crate::host_check::{HostCheck, Status};

/// The marker that says the page was shown once: `$XDG_CONFIG_HOME/vmdesk/host-check-seen`.
pub fn seen_marker(vms: &crate::service::VmService) -> Option<PathBuf> {
    vms.library_dir()
        .parent()
        .map(|d| d.join("host-check-seen"))
}

impl VmdeskApp {
    /// Gives the window the host check, and opens the page if it is the first run or the
    /// host cannot run VMs.
    pub fn with_host_check(mut self, check: HostCheck) -> VmdeskApp {
        let first_run = self.vms.list().is_ok_and(|l| l.is_empty())
            && seen_marker(&self.vms).is_some_and(|m| !m.exists());
        self.show_host = first_run || check.needs_attention();
        self.host_check = Some(check);
        self
    }

    pub(super) fn host_page(&mut self, ctx: &egui::Context) {
        if !self.show_host {
            return;
        }
        let Some(check) = &self.host_check else {
            self.show_host = false;
            return;
        };
        let mut open = true;
        let mut close = false;
        let mut copy = None;
        egui::Window::new("Host check")
            .open(&mut open)
            .collapsible(false)
            .default_width(600.0)
            .show(ctx, |ui| {
                ui.label(if check.ok() {
                    "This host can run VMs."
                } else {
                    "This host cannot run VMs yet: the fixes are below."
                });
                ui.label(RichText::new("What this host can run").strong());
                ui.add(egui::Label::new(&check.can_run).wrap());
                ui.separator();
                egui::ScrollArea::vertical()
                    .max_height(ctx.content_rect().height() * 0.5)
                    .show(ui, |ui| {
                        for item in &check.items {
                            let (mark, colour) = match item.status {
                                Status::Good => ("ok", Color32::LIGHT_GREEN),
                                Status::Warn => ("note", Color32::YELLOW),
                                Status::Fail => ("problem", Color32::LIGHT_RED),
                            };
                            ui.horizontal(|ui| {
                                ui.label(RichText::new(mark).color(colour).strong());
                                ui.label(RichText::new(item.what).strong());
                            });
                            ui.indent(item.what, |ui| {
                                ui.add(egui::Label::new(&item.detail).wrap());
                                if let Some(fix) = &item.fix
                                    && item.status != Status::Good
                                {
                                    ui.add(egui::Label::new(format!("Fix: {fix}")).wrap());
                                    if let Some(cmd) = item.command() {
                                        ui.horizontal(|ui| {
                                            ui.monospace(cmd);
                                            if ui.small_button("Copy").clicked() {
                                                copy = Some(cmd.to_string());
                                            }
                                        });
                                    }
                                }
                            });
                            ui.add_space(4.0);
                        }
                    });
                ui.separator();
                close = ui.button("Close").clicked();
            });
        if let Some(text) = copy {
            ctx.copy_text(text);
        }
        if close || !open {
            self.show_host = false;
            if let Some(m) = seen_marker(&self.vms) {
                let _ = std::fs::create_dir_all(m.parent().unwrap_or(&m));
                if let Err(e) = std::fs::write(&m, "") {
                    tracing::warn!("{}: {e}", m.display());
                }
            }
        }
    }
}
